"""Grade one submission: the unit of work a grading worker (a thread here, or a Dask worker) is handed.

A `Job` carries the notebook's bytes (and, for the kernel engine, a gradebook template), never a path
into the course, so a worker on another machine needs only a checkout of this repository. `grade_one`
takes it through intake, then the clean room (sandbox.py, execute.py, cleanroom.py), then merge.py;
with `Limits.engine="kernel"`, through nbgrader autograde in a throw-away course (kernel.py) first.
The worker sends back a `Result`: scores per test cell, the graded notebook, and what happened.
"""
import dataclasses
import json
import pathlib
import shutil
import tempfile
import time

import nbformat

from instructor.grading import execute, intake, kernel, merge, sandbox
from instructor.grading.kernel import describe_cell
from instructor.grading.sandbox import Limits, namespaces_available, prepare_worker

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
    cleanroom: object = None  # the clean room's Verdicts (instructor/grading/execute.py), when it ran

    @property
    def score(self) -> float:
        return sum(s for s, _ in self.scores.values())

    @property
    def max_score(self) -> float:
        return sum(m for _, m in self.scores.values())


def _grade_in_cleanroom(job: Job, checked, isolation: str, started: float) -> Result:
    """The clean room as the only run: the verdict and the outputs students get back come from one run."""
    nb = nbformat.from_dict(checked.notebook)
    room = execute.verdicts(nb, job.assignment, None, sandbox.fork_server_environment(job), job.limits, isolation)
    seconds = round(time.perf_counter() - started, 1)
    notes, flags = list(checked.notes), list(checked.flags) + [f for f in room.flags if f not in checked.flags]
    notes += room.notes
    if room.broken:
        return Result(job.student, job.assignment, "failed", merge.zero_scores(job.assignment),
                      notes + [f"the notebook could not be graded: {room.broken}"], flags, seconds,
                      room.peak_memory_mb, isolation, None, room)
    notes += [f"{what} {why}; the notebook was graded without it" for what, why in room.removed.values()]
    from instructor.grading.cleanroom import OUTPUT_CUT
    cut = [index + 1 for index, outputs in sorted(room.outputs.items())
           if any(o.get("output_type") == "stream" and o.get("text") == OUTPUT_CUT for o in outputs)]
    if cut:
        notes.append(f"the output of cell(s) {', '.join(map(str, cut))} was cut short")
    out = merge.graded_notebook(nb, room)
    scores = merge.cell_scores(out, room)
    if notes or flags:
        out.cells.insert(0, merge.notes_cell(notes, flags))
    return Result(job.student, job.assignment, "graded", scores, notes, flags, seconds, room.peak_memory_mb,
                  isolation, nbformat.writes(out), room)


def grade_one(job: Job, work_root=None, keep: bool = False) -> Result:
    """Grade `job` and return its Result. Never raises for anything the notebook does."""
    started = time.perf_counter()
    checked = intake.check_submission(job.notebook, job.assignment)
    if checked.notebook is None:
        return Result(job.student, job.assignment, "rejected", merge.zero_scores(job.assignment), [checked.rejected],
                      checked.flags, round(time.perf_counter() - started, 1))
    isolation = job.isolation if job.isolation != "auto" else (
        "namespaces" if namespaces_available() else "process")
    if isolation == "namespaces":
        prepare_worker()
    if job.limits.engine == "cleanroom":
        return _grade_in_cleanroom(job, checked, isolation, started)
    course_dir = pathlib.Path(tempfile.mkdtemp(prefix=f"grade-{job.assignment}-{job.student}-", dir=work_root))
    try:
        return _grade_in(course_dir, job, checked, isolation, started)
    finally:
        if not keep:
            shutil.rmtree(course_dir, ignore_errors=True)


def _grade_in(course_dir, job, checked, isolation, started) -> Result:
    report_path = course_dir / "guard.json"
    (course_dir / "nbgrader_config.py").write_text(kernel.course_config(course_dir, job.limits, report_path))
    (course_dir / "gradebook.db").write_bytes(job.template)
    (course_dir / "source" / job.assignment).mkdir(parents=True)
    for name in ("home/.ipython", "home/runtime", "tmp"):
        (course_dir / name).mkdir(parents=True)
    submitted = course_dir / "submitted" / job.student / job.assignment
    submitted.mkdir(parents=True)
    if job.timestamp:
        (submitted / "timestamp.txt").write_text(job.timestamp)
    notes, nb = list(checked.notes), checked.notebook
    for attempt in range(3):
        nbformat.write(nb, str(submitted / f"{job.assignment}.ipynb"))
        report_path.unlink(missing_ok=True)
        code = kernel.run_autograde(course_dir, job, isolation)
        report = json.loads(report_path.read_text()) if report_path.exists() else {}
        graded = course_dir / "autograded" / job.student / job.assignment / f"{job.assignment}.ipynb"
        if code == 0 and graded.exists():
            notes += merge.guard_notes(report)
            out = nbformat.read(str(graded), as_version=4)
            scores, flags = kernel.gradebook_scores(course_dir, job.assignment, job.student), list(checked.flags)
            room = None
            # The clean room can only take points away: with none to take (a blank notebook), it is skipped.
            if job.limits.cleanroom and any(score for score, _ in scores.values()):
                room = execute.verdicts(out, job.assignment, course_dir, sandbox.run_environment(course_dir, job), job.limits,
                                          isolation, {i: "this cell ran past the time limit in the kernel's run"
                                                      for i in report.get("timed_out", [])})
                if room.broken:
                    return Result(job.student, job.assignment, "failed", merge.zero_scores(job.assignment),
                                  notes + [f"the clean room that grades the test cells could not run: {room.broken}"],
                                  flags + room.flags, round(time.perf_counter() - started, 1),
                                  report.get("peak_memory_mb", 0.0), isolation)
                scores = merge.apply_verdicts(room, out, scores, notes, flags, report)
            if notes or flags:
                out.cells.insert(0, merge.notes_cell(notes, flags))
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
    log = (course_dir / "nbgrader.log").read_text(errors="replace")
    why = report.get("failed") or ("grading ran past its time limit" if code == "timeout" else
                                   next((ln.strip() for ln in reversed(log.splitlines()) if "Error" in ln),
                                        f"nbgrader exited with {code}"))
    return Result(job.student, job.assignment, "failed", merge.zero_scores(job.assignment),
                  notes + [f"the notebook could not be graded: {why}"], checked.flags,
                  round(time.perf_counter() - started, 1), report.get("peak_memory_mb", 0.0), isolation)
