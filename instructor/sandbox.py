"""Grade one submission in a sandbox of its own: the unit of work the class grader hands its workers.

A `Job` carries the notebook's bytes and a gradebook template, never a path into the course, so a
worker on another machine needs only a checkout of this repository. The sandbox is a throw-away
nbgrader course (its own gradebook, its own submitted/ and autograded/): `nbgrader autograde` runs
there as it would in the course, with instructor/guarded_execute.py's limits, inside Linux namespaces
where the machine allows (instructor/jail.py: read-only file system, no network, own process tree).
The worker sends back a `Result`: scores per test cell, the graded notebook, and what happened.
"""
import dataclasses
import functools
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import nbformat

from instructor import cleanroom, intake, nbgrader_ops
from instructor.guarded_execute import describe_cell
from instructor.notebooks import ROOT, grade_cells, notebook_path, read_notebook

UNSHARE = ["unshare", "--user", "--map-root-user", "--pid", "--fork", "--mount-proc", "--net", "--mount",
           "--propagation", "private"]


@dataclasses.dataclass
class Limits:
    cell_timeout: int = 300  # seconds per cell
    notebook_timeout: int = 1800  # seconds for the whole notebook, re-runs included
    memory_mb: int = 6144  # resident memory of the kernel and its children
    max_output_bytes: int = 1_000_000  # output kept per cell
    threads: int = 1  # torch/BLAS threads of the kernel
    integrity: bool = True  # tamper checks and the clean-room verdict; off only to show what they catch
    cleanroom: bool = True  # the clean-room verdict (instructor/cleanroom.py); off only to measure its cost


@dataclasses.dataclass
class Job:
    student: str
    assignment: str
    notebook: bytes  # the submitted file, as it was
    template: bytes  # a gradebook.db that knows the assignment (make_template)
    limits: Limits = dataclasses.field(default_factory=Limits)
    gpu: str = None  # CUDA_VISIBLE_DEVICES for the kernel: None hides every GPU, "inherit" keeps the worker's
    timestamp: str = None  # nbgrader's timestamp.txt, when the submission has one
    isolation: str = "auto"  # "namespaces", "process" or "auto"


@dataclasses.dataclass
class Result:
    student: str
    assignment: str
    status: str  # "graded", "rejected" (nothing could be graded) or "failed" (grading broke)
    scores: dict  # grade_id -> [score, max_score]
    notes: list  # what the student should know about how this was graded
    flags: list  # what the instructor may want to look at
    seconds: float = 0.0
    peak_memory_mb: float = 0.0
    isolation: str = ""
    notebook: str = None  # the graded notebook (JSON), notes cell included
    cleanroom: object = None  # the clean room's Verdicts (instructor/cleanroom.py), when it ran

    @property
    def score(self) -> float:
        return sum(s for s, _ in self.scores.values())

    @property
    def max_score(self) -> float:
        return sum(m for _, m in self.scores.values())


# -- the sandbox ------------------------------------------------------------------------------------
def _course_config(sandbox: pathlib.Path, limits: Limits = None, report: pathlib.Path = None) -> str:
    lines = ["c = get_config()  # noqa: F821 - written by instructor/sandbox.py for one submission",
             f"load_subconfig({str(ROOT / 'nbgrader_config.py')!r})  # noqa: F821",
             f"c.CourseDirectory.root = {str(sandbox)!r}",
             f"c.CourseDirectory.db_url = {'sqlite:///' + str(sandbox / 'gradebook.db')!r}"]
    if limits:
        lines += [f"c.Execute.timeout = {limits.cell_timeout}",
                  f"c.GuardedExecute.notebook_timeout = {limits.notebook_timeout}",
                  f"c.GuardedExecute.memory_limit_mb = {limits.memory_mb}",
                  f"c.GuardedExecute.max_output_bytes = {limits.max_output_bytes}",
                  f"c.GuardedExecute.check_integrity = {limits.integrity}",
                  f"c.GuardedExecute.report_path = {str(report)!r}"]
    return "\n".join(lines) + "\n"


def _pythonpath() -> str:
    """The course first, then whatever the worker already had (a GPU box's carried packages, say)."""
    return os.pathsep.join(p for p in [str(ROOT), os.environ.get("PYTHONPATH", "")] if p)


def _nbgrader(args, cwd, env=None, timeout=None):
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    return subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PATH": path, "PYTHONPATH": _pythonpath(), **(env or {})}, timeout=timeout)


def make_template(assignment: str) -> bytes:
    """A gradebook that knows `assignment` and no student: each sandbox starts from a copy."""
    with tempfile.TemporaryDirectory(prefix="gradebook-template-") as tmp:
        tmp = pathlib.Path(tmp)
        (tmp / "nbgrader_config.py").write_text(_course_config(tmp))
        (tmp / "source" / assignment).mkdir(parents=True)
        shutil.copy(notebook_path(assignment), tmp / "source" / assignment)
        done = _nbgrader(["generate_assignment", assignment, "--force", "--create"], tmp)
        if done.returncode != 0 or "Exception while loading config" in done.stderr:
            raise RuntimeError(f"could not make a gradebook for {assignment}:\n{done.stderr[-2000:]}")
        return (tmp / "gradebook.db").read_bytes()


@functools.cache
def namespaces_available() -> bool:
    try:
        return subprocess.run([*UNSHARE, "true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


_prepared, _prepare_lock = set(), threading.Lock()


def prepare_worker() -> None:
    """Build the offline GPT-2 stand-in once per process, outside any sandbox: inside one the cache is
    read-only (so no notebook can poison it for the next)."""
    with _prepare_lock:
        if "standin" not in _prepared:
            subprocess.run([sys.executable, "-c", "from utils.models import gpt2_source; gpt2_source()"],
                           cwd=ROOT, capture_output=True, env={**os.environ, "PYTHONPATH": _pythonpath()})
            _prepared.add("standin")


def _environment(sandbox: pathlib.Path, job: Job) -> dict:
    home = sandbox / "home"
    real_home = pathlib.Path.home()
    env = {
        "HOME": str(home), "TMPDIR": str(sandbox / "tmp"), "IPYTHONDIR": str(home / ".ipython"),
        "MPLCONFIGDIR": str(home / ".matplotlib"), "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "XDG_CACHE_HOME": str(home / ".cache"), "MPLBACKEND": "Agg", "PYTHONDONTWRITEBYTECODE": "1",
        # Models are read from the grader's caches (read-only inside the jail), never fetched.
        "COURSE_CACHE": os.environ.get("COURSE_CACHE", str(real_home / ".cache" / "lora-course")),
        "HF_HOME": os.environ.get("HF_HOME", str(real_home / ".cache" / "huggingface")), "HF_HUB_OFFLINE": "1",
        "COURSE_ROOT": str(ROOT),
        **{name: str(job.limits.threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")},
    }
    if job.gpu != "inherit":
        env["CUDA_VISIBLE_DEVICES"] = job.gpu or ""
    return env


def _run_environment(sandbox: pathlib.Path, job: Job) -> dict:
    env = {**os.environ, "PYTHONPATH": _pythonpath(), **_environment(sandbox, job)}
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
    return env


def _run_nbgrader(sandbox: pathlib.Path, job: Job, isolation: str):
    command = [sys.executable, "-m", "nbgrader", "autograde", job.assignment, "--student", job.student, "--force"]
    if isolation == "namespaces":
        command = [*UNSHARE, sys.executable, "-m", "instructor.jail", str(sandbox), "--", *command]
    env = _run_environment(sandbox, job)
    with open(sandbox / "nbgrader.log", "w", encoding="utf-8") as log:
        try:
            return subprocess.run(command, cwd=sandbox, env=env, stdout=log, stderr=subprocess.STDOUT,
                                  timeout=job.limits.notebook_timeout + 300, start_new_session=True).returncode
        except subprocess.TimeoutExpired:
            return "timeout"


def _scores(sandbox: pathlib.Path, assignment: str, student: str) -> dict:
    return {name: list(points) for name, points in nbgrader_ops.cell_scores(assignment, student, sandbox).items()}


def _zero_scores(assignment: str) -> dict:
    return {g: [0.0, float(p)] for g, p in grade_cells(read_notebook(notebook_path(assignment))).items()}


def _guard_notes(report: dict) -> list:
    notes = [f"{r['cell']} {r['reason']}; the notebook was graded without it" for r in report.get("removed", {}).values()]
    if report.get("timed_out"):
        cells = ", ".join(str(i + 1) for i in report["timed_out"])
        notes.append(f"cell(s) {cells} ran past the time limit and were stopped")
    if report.get("truncated"):
        notes.append(f"the output of cell(s) {', '.join(str(i + 1) for i in report['truncated'])} was cut short")
    if report.get("not_run"):
        notes.append(f"{len(report['not_run'])} cell(s) were not run: the notebook used up its grading time")
    return notes


def _apply_verdicts(room: cleanroom.Verdicts, out, scores: dict, notes: list, flags: list, report: dict) -> dict:
    """The grade: a test cell keeps the kernel run's points only if the clean room passed it too."""
    removed_in_kernel = set(report.get("removed", {}))
    for index, (cell, why) in room.removed.items():
        if str(index) not in removed_in_kernel:
            notes.append(f"{cell} {why}; the notebook was graded without it")
    final = {}
    for grade_id, (score, max_score) in scores.items():
        if room.passed.get(grade_id):
            final[grade_id] = [score, max_score]
            continue
        final[grade_id] = [0.0, max_score]
        if score:  # the kernel's run passed what the clean room failed: say so, in the cell and on top
            why = room.why.get(grade_id, "it failed")
            notes.append(f"`{grade_id}` passed in the notebook's own run but failed in the clean-room run that "
                         f"grades it: {why}")
            flags.append(f"the kernel's run and the clean room disagree on {grade_id}")
            for cell in out.cells:
                if cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") == grade_id:
                    cell.outputs.append(nbformat.v4.new_output("error", ename="CleanRoomVerdict", evalue=why,
                                                               traceback=[f"CleanRoomVerdict: {why}"]))
    flags += [f for f in room.flags if f not in flags]
    return final


def notes_cell(notes: list, flags: list = ()) -> dict:
    """The markdown cell put at the top of a graded notebook (and so of its feedback)."""
    lines = ["**Grading notes** (from the autograder)", ""] + [f"- {n[0].upper()}{n[1:]}." for n in notes]
    cell = nbformat.v4.new_markdown_cell("\n".join(lines))
    cell.metadata["course_grading_notes"] = {"notes": notes, "flags": list(flags)}
    return cell


def grade_one(job: Job, work_root=None, keep: bool = False) -> Result:
    """Grade `job` and return its Result. Never raises for anything the notebook does."""
    started = time.perf_counter()
    checked = intake.check_submission(job.notebook, job.assignment)
    if checked.notebook is None:
        return Result(job.student, job.assignment, "rejected", _zero_scores(job.assignment), [checked.rejected],
                      checked.flags, round(time.perf_counter() - started, 1))
    isolation = job.isolation if job.isolation != "auto" else (
        "namespaces" if namespaces_available() else "process")
    if isolation == "namespaces":
        prepare_worker()
    sandbox = pathlib.Path(tempfile.mkdtemp(prefix=f"grade-{job.assignment}-{job.student}-", dir=work_root))
    try:
        return _grade_in(sandbox, job, checked, isolation, started)
    finally:
        if not keep:
            shutil.rmtree(sandbox, ignore_errors=True)


def _grade_in(sandbox, job, checked, isolation, started) -> Result:
    report_path = sandbox / "guard.json"
    (sandbox / "nbgrader_config.py").write_text(_course_config(sandbox, job.limits, report_path))
    (sandbox / "gradebook.db").write_bytes(job.template)
    (sandbox / "source" / job.assignment).mkdir(parents=True)
    for name in ("home/.ipython", "home/runtime", "tmp"):
        (sandbox / name).mkdir(parents=True)
    submitted = sandbox / "submitted" / job.student / job.assignment
    submitted.mkdir(parents=True)
    if job.timestamp:
        (submitted / "timestamp.txt").write_text(job.timestamp)
    notes, nb = list(checked.notes), checked.notebook
    for attempt in range(3):
        nbformat.write(nb, str(submitted / f"{job.assignment}.ipynb"))
        report_path.unlink(missing_ok=True)
        code = _run_nbgrader(sandbox, job, isolation)
        report = json.loads(report_path.read_text()) if report_path.exists() else {}
        graded = sandbox / "autograded" / job.student / job.assignment / f"{job.assignment}.ipynb"
        if code == 0 and graded.exists():
            notes += _guard_notes(report)
            out = nbformat.read(str(graded), as_version=4)
            scores, flags = _scores(sandbox, job.assignment, job.student), list(checked.flags)
            room = None
            # The clean room can only take points away: with none to take (a blank notebook), it is skipped.
            if job.limits.integrity and job.limits.cleanroom and any(score for score, _ in scores.values()):
                room = cleanroom.verdicts(out, job.assignment, sandbox, _run_environment(sandbox, job), job.limits,
                                          isolation, {i: "this cell ran past the time limit in the kernel's run"
                                                      for i in report.get("timed_out", [])})
                if room.broken:
                    return Result(job.student, job.assignment, "failed", _zero_scores(job.assignment),
                                  notes + [f"the clean room that grades the test cells could not run: {room.broken}"],
                                  flags + room.flags, round(time.perf_counter() - started, 1),
                                  report.get("peak_memory_mb", 0.0), isolation)
                scores = _apply_verdicts(room, out, scores, notes, flags, report)
            if notes or flags:
                out.cells.insert(0, notes_cell(notes, flags))
            return Result(job.student, job.assignment, "graded", scores, notes, flags,
                          round(time.perf_counter() - started, 1), report.get("peak_memory_mb", 0.0), isolation,
                          nbformat.writes(out), room)
        running = report.get("running")
        if report.get("failed") is None and running is not None and code != 0 and attempt < 2:
            # The grading process itself died mid-cell (something killed it): that cell goes, and again.
            where = describe_cell(nb.cells[running], running)
            notes.append(f"{where} stopped the grading process; the notebook was graded without it")
            nb.cells[running].source = "raise RuntimeError('autograder: this cell stopped the grading process')"
            continue
        break
    log = (sandbox / "nbgrader.log").read_text(errors="replace")
    why = report.get("failed") or ("grading ran past its time limit" if code == "timeout" else
                                   next((ln.strip() for ln in reversed(log.splitlines()) if "Error" in ln),
                                        f"nbgrader exited with {code}"))
    return Result(job.student, job.assignment, "failed", _zero_scores(job.assignment),
                  notes + [f"the notebook could not be graded: {why}"], checked.flags,
                  round(time.perf_counter() - started, 1), report.get("peak_memory_mb", 0.0), isolation)
