"""A scratch copy of the course that tests can release and autograde into, through nbgrader."""
import copy
import importlib
import json
import os
import pathlib
import shutil

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


def answers_module(assignment: str):
    return importlib.import_module(f"tests.answers.{assignment}")


class ScratchCourse:
    """Copies source/ (and links the code the notebooks import) into `root`, then releases it."""

    def __init__(self, root: pathlib.Path):
        self.root = root
        for name in ("graders", "utils", "instructor"):
            os.symlink(ROOT / name, root / name)
        for name in ("colab_setup.py", "nbgrader_config.py"):
            shutil.copy(ROOT / name, root / name)
        shutil.copytree(ROOT / "source", root / "source")
        self._count = 0

    def release(self, assignment):
        nbgrader_ops.generate_release(assignment, self.root)
        nbgrader_ops.generate_solution(assignment, self.root)

    def notebook(self, assignment, step) -> dict:
        """The `step` ("release" or "solution") version of an assignment, released on first use."""
        if not notebook_path(assignment, step, self.root).exists():
            self.release(assignment)
        return read_notebook(notebook_path(assignment, step, self.root))

    def grade(self, assignment: str, nb: dict, stock: bool = False):
        """Grade `nb` as a new student's submission; return (cell scores, graded notebook).

        The way a class is graded (instructor/grading/worker.py: intake, then the clean room), or with
        `stock=True` through plain `nbgrader autograde` in this scratch course, to compare the two."""
        self._count += 1
        student = f"s{self._count}"
        if not stock:
            from instructor.grading import worker
            result = worker.grade_one(worker.Job(student, assignment, json.dumps(nb).encode(), b"", LIMITS))
            assert result.status == "graded", (result.status, result.notes)
            return {g: tuple(points) for g, points in result.scores.items()}, json.loads(result.notebook)
        self.notebook(assignment, "release")  # the gradebook must know the assignment
        path = self.root / "upload.ipynb"
        path.write_text(json.dumps(nb))
        nbgrader_ops.submit(assignment, student, path, self.root)
        nbgrader_ops.autograde(assignment, student, self.root)
        graded = read_notebook(nbgrader_ops.autograded_notebook(assignment, student, self.root))
        return nbgrader_ops.cell_scores(assignment, student, self.root), graded


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
