"""Autograde a whole class: every submission in submitted/, in parallel, each in its own sandbox.

    grade_class(["ex1_memory"], workers=8, gpu_workers=1)

Submissions of exercises with CUDA-only test cells (`test_cuda_*`, Exercise 5) go to GPU workers,
one GPU each; the rest to CPU workers. Locally the workers are threads that each drive one sandboxed
`nbgrader autograde` (instructor/grading/worker.py); with `scheduler=` they are Dask workers on any number
of machines (docs/grading.md). Results are merged here, one at a time, into the course's gradebook
and autograded/ folder, so `nbgrader generate_feedback`, `nbgrader export` and formgrader work as usual.
"""
import concurrent.futures
import csv
import dataclasses
import datetime
import os
import pathlib
import queue
import shutil
import subprocess
import time

import nbformat

from instructor import nbgrader_ops
from instructor.grading import intake, kernel, merge, sandbox, worker
from instructor.course.notebooks import REFERENCE_STUDENT, ROOT, cuda_test_cells, notebook_path



def gpu_count() -> int:
    """GPUs on this machine, asked of nvidia-smi (importing torch here would hold CUDA in the parent)."""
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        return len([d for d in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if d.strip()])
    return out.stdout.count("GPU ") if out.returncode == 0 else 0


def default_workers() -> int:
    """One per core, but at most one per 4 GB of memory (a GPT-2 notebook's kernel peaks near 3 GB)."""
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return max(1, min(os.cpu_count() or 1, int(memory_gb // 4)))


def find_submissions(assignment: str, root=ROOT, students=None) -> list:
    """(student, notebook file or None, timestamp or None) for each student folder under submitted/
    (but `make course`'s reference solutions)."""
    found = []
    for folder in sorted((pathlib.Path(root) / "submitted").glob(f"*/{assignment}")):
        student = folder.parent.name
        if student == REFERENCE_STUDENT or (students and student not in students):
            continue
        wanted = folder / f"{assignment}.ipynb"
        notebooks = [wanted] if wanted.exists() else sorted(folder.glob("*.ipynb"))
        stamp = folder / "timestamp.txt"
        found.append((student, notebooks[0] if len(notebooks) == 1 else None,
                      stamp.read_text().strip() if stamp.exists() else None))
    return found


def ensure_in_gradebook(assignment: str, root=ROOT) -> None:
    """The course gradebook must know the assignment (it does once `make build` has run)."""
    from nbgrader.api import MissingEntry
    if nbgrader_ops.gradebook_path(root).exists():
        with nbgrader_ops.gradebook(root) as gb:
            try:
                gb.find_assignment(assignment)
                return
            except MissingEntry:
                pass
    nbgrader_ops.generate_release(assignment, root)


def record(result: worker.Result, root=ROOT) -> None:
    """Put one Result into the course: the graded notebook in autograded/, the scores in the gradebook."""
    folder = pathlib.Path(root) / "autograded" / result.student / result.assignment
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    if result.notebook is None:  # rejected or failed: the blank release, with the reason on top
        nb = nbformat.read(str(notebook_path(result.assignment, "release", root)), as_version=4)
        nb.cells.insert(0, merge.notes_cell(result.notes, result.flags))
        text = nbformat.writes(nb)
    else:
        text = result.notebook
    (folder / f"{result.assignment}.ipynb").write_text(text, encoding="utf-8")
    with nbgrader_ops.gradebook(root) as gb, intake.quietly():  # nbgrader's SQLAlchemy session warnings: harmless
        gb.update_or_create_student(result.student)
        gb.update_or_create_submission(result.assignment, result.student)
        notebook = gb.find_submission_notebook(result.assignment, result.assignment, result.student)
        for grade in notebook.grades:
            grade.auto_score = result.scores.get(grade.name, [0.0])[0]
            grade.needs_manual_grade = False
        gb.db.commit()


@dataclasses.dataclass
class Plan:
    """How a class is graded: the workers, the limits and where the work runs."""
    workers: int = dataclasses.field(default_factory=default_workers)
    gpu_workers: int = None  # None: one per GPU found
    limits: sandbox.Limits = dataclasses.field(default_factory=sandbox.Limits)
    isolation: str = "auto"
    scheduler: str = None  # a Dask scheduler address; None grades on this machine


class _Executors:
    """submit(job) -> concurrent.futures.Future, on a CPU or GPU worker, here or on a Dask cluster."""

    def __init__(self, plan: Plan, gpus: int):
        self.client = None
        if plan.scheduler:
            from distributed import Client
            self.client = Client(plan.scheduler)
            self.cpu = self.client.get_executor(pure=False)
            self.gpu = self.client.get_executor(pure=False, resources={"GPU": 1})
            return
        self.cpu = concurrent.futures.ThreadPoolExecutor(plan.workers, thread_name_prefix="cpu-worker")
        self.gpu = concurrent.futures.ThreadPoolExecutor(max(1, plan.gpu_workers), thread_name_prefix="gpu-worker")
        self.free_gpus = queue.Queue()
        for slot in range(max(1, plan.gpu_workers)):
            self.free_gpus.put(str(slot % max(1, gpus)))

    def submit(self, job: worker.Job):
        if job.gpu != "inherit":
            return self.cpu.submit(worker.grade_one, job)
        if self.client:  # a Dask GPU worker was started with CUDA_VISIBLE_DEVICES set to its own GPU
            return self.gpu.submit(worker.grade_one, job)
        return self.gpu.submit(self._on_a_gpu, job)

    def _on_a_gpu(self, job):
        device = self.free_gpus.get()
        try:
            return worker.grade_one(dataclasses.replace(job, gpu=device))
        finally:
            self.free_gpus.put(device)

    def close(self):
        if self.client:
            self.client.close()
        else:
            self.cpu.shutdown()
            self.gpu.shutdown()


def _progress_line(r: worker.Result) -> str:
    what = {"graded": f"{r.score:g}/{r.max_score:g}", "rejected": "REJECTED", "failed": "FAILED"}[r.status]
    said = "; ".join(r.notes + [f"flag: {f}" for f in r.flags])
    return f"{r.assignment:24s} {r.student:16s} {what:>9s} {r.seconds:6.0f}s  {said[:300]}"


def grade_class(assignments, root=ROOT, students=None, plan: Plan = None, echo=print) -> list:
    """Grade every submission of `assignments`; return the Results (also written into the course)."""
    from tqdm.auto import tqdm
    plan = plan or Plan()
    gpus = gpu_count() if plan.scheduler is None else 0
    if plan.gpu_workers is None:
        plan.gpu_workers = gpus
    on_gpu = {a for a in assignments if cuda_test_cells(a, root)}
    use_gpu = bool(on_gpu) and (plan.gpu_workers > 0 or plan.scheduler is not None)
    if on_gpu and not use_gpu:
        echo(f"WARNING: no CUDA GPU here: {', '.join(sorted(on_gpu))} will be graded on the CPU, and its "
             "CUDA-only cells (test_cuda_*) will score 0 with the message 'must be graded on a GPU'.")
    # torch/BLAS threads per notebook: the cores shared by every worker that may run at once
    plan.limits.threads = max(1, (os.cpu_count() or 1) // max(1, plan.workers + (plan.gpu_workers or 0) * use_gpu))
    results, jobs = [], []
    for assignment in assignments:
        found = find_submissions(assignment, root, students)
        if not found:
            echo(f"No submissions of {assignment} under {pathlib.Path(root) / 'submitted'}/<student>/{assignment}/ "
                 "(`python -m instructor collect` puts them there).")
            continue
        ensure_in_gradebook(assignment, root)
        # the kernel engine runs nbgrader in a throw-away course that needs a gradebook; the clean room none
        template = kernel.make_template(assignment) if plan.limits.engine == "kernel" else b""
        for student, path, stamp in found:
            if path is None:
                results.append(worker.Result(student, assignment, "rejected", merge.zero_scores(assignment),
                                              ["no single notebook was found in the submission folder"], []))
                continue
            jobs.append(worker.Job(student, assignment, path.read_bytes(), template, plan.limits,
                                    "inherit" if assignment in on_gpu and use_gpu else None, stamp, plan.isolation))
    for r in results:
        record(r, root)
    if not jobs:
        return results
    if plan.scheduler is None and any(j.isolation != "process" for j in jobs):
        sandbox.prepare_worker()
    executors = _Executors(plan, gpus)
    echo(f"Grading {len(jobs)} submissions: {plan.workers if not plan.scheduler else 'Dask'} CPU worker(s)"
         f"{f', {plan.gpu_workers} GPU worker(s)' if use_gpu and not plan.scheduler else ''}, "
         f"isolation {'namespaces' if sandbox.namespaces_available() else 'process'} (this machine), "
         f"limits: {plan.limits.cell_timeout}s a cell, {plan.limits.memory_mb:,} MB.")
    if not sandbox.namespaces_available() and plan.scheduler is None:
        echo("WARNING: no Linux user namespaces here (unshare refused), so no jail: the notebooks can read the "
             "judges' files, reference answers included. The verdicts are still the judges', on fresh inputs; "
             "grade where namespaces work (docs/grading.md, threat model).")
    started = time.perf_counter()
    try:
        futures = {executors.submit(job): job for job in jobs}
        with tqdm(total=len(futures), unit="nb", desc="grading", dynamic_ncols=True) as bar:
            for future in concurrent.futures.as_completed(futures):
                job = futures[future]
                try:
                    result = future.result()
                except Exception as error:  # noqa: BLE001 - a worker that broke must not stop the class
                    result = worker.Result(job.student, job.assignment, "failed", merge.zero_scores(job.assignment),
                                            [f"the grading worker failed: {type(error).__name__}: {error}"], [])
                try:
                    record(result, root)
                except Exception as error:  # noqa: BLE001 - one result that cannot be written must not stop the class
                    result = worker.Result(job.student, job.assignment, "failed", merge.zero_scores(job.assignment),
                                            [f"the graded notebook could not be recorded: {type(error).__name__}: "
                                             f"{error}"], [])
                    record(result, root)
                results.append(result)
                bar.update()
                if result.status != "graded" or result.notes or result.flags:
                    bar.write(_progress_line(result))
    finally:
        executors.close()
    minutes = (time.perf_counter() - started) / 60
    echo(f"Graded {len(jobs)} submissions in {minutes * 60:.0f} s ({len(jobs) / minutes:.1f} per minute).")
    return results


def write_report(results, path) -> pathlib.Path:
    """One row per submission: status, score, time, memory and every note and flag."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["student_id", "assignment", "status", "score", "max_score", "seconds", "peak_memory_mb",
                      "isolation", "notes", "flags"])
        for r in sorted(results, key=lambda r: (r.assignment, r.student)):
            out.writerow([r.student, r.assignment, r.status, f"{r.score:g}", f"{r.max_score:g}", r.seconds,
                          r.peak_memory_mb, r.isolation, " | ".join(r.notes), " | ".join(r.flags)])
    return path


def report_path(root=ROOT) -> pathlib.Path:
    return pathlib.Path(root) / "reports" / f"grading-{datetime.datetime.now():%Y%m%d-%H%M%S}.csv"
