"""A scratch copy of the course that tests can release and autograde into, through nbgrader."""
import copy
import fcntl
import hashlib
import importlib
import json
import os
import pathlib
import shutil
import tempfile

import torch

from instructor import nbgrader_ops
from instructor.course.notebooks import CUDA_TEST_PREFIX, ROOT, grade_cells, notebook_path, read_notebook

HAS_CUDA = torch.cuda.is_available()


def _limits():
    from instructor.grading import sandbox
    return sandbox.Limits(cell_timeout=300, notebook_timeout=900, memory_mb=6000)


LIMITS = _limits()
GPU_MESSAGE = "needs a CUDA GPU"  # what utils.require_cuda says


def answer_of(test_grade_id: str) -> str:
    """test_<answer>, test_<answer>__more, test_cuda_<answer>... -> <answer>."""
    name = test_grade_id[len("test_"):]
    if test_grade_id.startswith(CUDA_TEST_PREFIX):
        name = test_grade_id[len(CUDA_TEST_PREFIX):]
    return name.split("__")[0]


def solution_cells(nb: dict) -> list:
    return [c["metadata"]["nbgrader"]["grade_id"] for c in nb["cells"]
            if c.get("metadata", {}).get("nbgrader", {}).get("solution")]


def cells_grading(nb: dict, answer: str) -> list:
    return [g for g in grade_cells(nb) if answer_of(g) == answer]


def with_cell(nb: dict, grade_id: str, source: str) -> dict:
    """A copy of `nb` whose cell `grade_id` holds `source`."""
    nb = copy.deepcopy(nb)
    cells = [c for c in nb["cells"] if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") == grade_id]
    assert len(cells) == 1, f"no single cell {grade_id}"
    cells[0]["source"] = source
    return nb


def up_to_last_of(nb: dict, grade_ids) -> dict:
    """`nb` cut after the last of the cells `grade_ids`: all a cold kernel needs to grade those (what follows
    cannot change their grades, and costs most of a fresh kernel's time)."""
    wanted = set(grade_ids)
    last = max(i for i, c in enumerate(nb["cells"]) if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") in wanted)
    return {**nb, "cells": nb["cells"][:last + 1]}


def answers_module(assignment: str):
    return importlib.import_module(f"tests.answers.{assignment}")


SHARED = None  # a folder every test worker of this session can see (conftest sets it); else the temp folder
COPIED = ("colab_setup.py", "nbgrader_config.py")


def _link_code(root: pathlib.Path) -> None:
    """The code the notebooks and nbgrader's configuration import, linked (never copied, never stale)."""
    for name in ("graders", "judges", "utils", "instructor"):
        os.symlink(ROOT / name, root / name)


def released_course() -> pathlib.Path:
    """The whole course released by nbgrader once per test session: two commands for all five assignments
    (`--assignment` takes a glob), where releasing in each scratch course cost two per assignment (about
    5 s each, mostly importing nbgrader). Built by whichever test worker gets here first, under a lock."""
    digest = hashlib.sha256()
    for path in sorted((ROOT / "source").rglob("*")) + [ROOT / name for name in COPIED]:
        if path.is_file():
            digest.update(path.relative_to(ROOT).as_posix().encode() + path.read_bytes())
    base = pathlib.Path(SHARED or tempfile.gettempdir())
    done = base / f"released-course-{digest.hexdigest()[:16]}"
    with open(base / f"{done.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (done / ".complete").exists():
            shutil.rmtree(done, ignore_errors=True)
            done.mkdir()
            _link_code(done)
            for name in COPIED:
                shutil.copy(ROOT / name, done / name)
            shutil.copytree(ROOT / "source", done / "source")
            nbgrader_ops.generate_release("*", done)
            nbgrader_ops.generate_solution("*", done)
            (done / ".complete").touch()
    return done


class ScratchCourse:
    """A course root in `root`: source/, release/, solution/ and a gradebook that knows every assignment,
    copied from the session's released_course() (the code the notebooks import is linked, not copied)."""

    def __init__(self, root: pathlib.Path):
        self.root = root
        template = released_course()
        _link_code(root)
        for name in (*COPIED, "gradebook.db"):
            shutil.copy(template / name, root / name)
        for name in ("source", "release", "solution"):
            shutil.copytree(template / name, root / name)
        self._count = 0
        self._graded = {}  # (assignment, sha256 of the notebook) -> (scores, graded notebook JSON)

    def notebook(self, assignment, step) -> dict:
        """The `step` ("release" or "solution") version of an assignment, as nbgrader generated it."""
        return read_notebook(notebook_path(assignment, step, self.root))

    def grade(self, assignment: str, nb: dict, stock: bool = False):
        """Grade `nb` as a new student's submission; return (cell scores, graded notebook).

        The way a class is graded (instructor/grading/worker.py: intake, then the clean room), or with
        `stock=True` through plain `nbgrader autograde` in this scratch course, to compare the two.
        A notebook graded before (same bytes) is not graded again by the clean room: tests that need the
        same grade (full marks, and agreement with stock) share one run."""
        if stock:
            return self.grade_stock(assignment, [nb])[0]
        data = json.dumps(nb, sort_keys=True).encode()
        key = (assignment, hashlib.sha256(data).hexdigest())
        if key not in self._graded:
            from instructor.grading import worker
            # a GPU machine grades the CUDA cells as an instructor does there: the job sees the GPU
            job = worker.Job(self._new_student(), assignment, data, b"", LIMITS, gpu="inherit" if HAS_CUDA else None)
            result = worker.grade_one(job)
            assert result.status == "graded", (result.status, result.notes)
            self._graded[key] = ({g: tuple(points) for g, points in result.scores.items()}, result.notebook)
        scores, notebook = self._graded[key]
        return dict(scores), json.loads(notebook)

    def grade_stock(self, assignment: str, notebooks: list) -> list:
        """Grade several notebooks with ONE `nbgrader autograde` (each still in its own fresh kernel, as
        nbgrader does, the checks judging in it): [(cell scores, graded notebook), ...] in the same order.
        This course's nbgrader_config runs GuardedExecute: nbgrader's Execute with resource limits."""
        batch = f"b{self._new_student()}x"
        students = [f"{batch}{i}" for i in range(len(notebooks))]
        for student, nb in zip(students, notebooks):
            path = self.root / "upload.ipynb"
            path.write_text(json.dumps(nb))
            nbgrader_ops.submit(assignment, student, path, self.root)
        nbgrader_ops.autograde(assignment, f"{batch}*", self.root)  # --student takes a glob
        return [(nbgrader_ops.cell_scores(assignment, student, self.root),
                 read_notebook(nbgrader_ops.autograded_notebook(assignment, student, self.root)))
                for student in students]

    def _new_student(self) -> str:
        self._count += 1
        return f"s{self._count}"


def cell_output_text(nb: dict, grade_id: str) -> str:
    for cell in nb["cells"]:
        if cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") == grade_id:
            parts = []
            for out in cell.get("outputs", []):
                parts.append("".join(out.get("text", "")))
                parts.append(f"{out.get('ename', '')}: {out.get('evalue', '')}")
                parts.extend(out.get("traceback", []))
            return "\n".join(parts)
    raise KeyError(grade_id)
