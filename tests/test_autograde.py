"""Every notebook, graded as a class is: solutions get full marks, the untouched release gets zero,
and stock `nbgrader autograde` gives every cell the same score."""
import nbformat
import pytest

from instructor.course.notebooks import ASSIGNMENTS, CUDA_TEST_PREFIX
from instructor.grading.execute import last_graded_cell
from tests.course import GPU_MESSAGE, HAS_CUDA, cell_output_text

pytestmark = pytest.mark.slow


def _by_assignment(argvalues):
    """One worker per assignment: its tests grade the same notebooks, and share those grades."""
    return [pytest.param(a, marks=pytest.mark.xdist_group(f"autograde-{a}")) for a in argvalues]


def needs_gpu_here(grade_id: str) -> bool:
    return grade_id.startswith(CUDA_TEST_PREFIX) and not HAS_CUDA


@pytest.mark.parametrize("assignment", _by_assignment(ASSIGNMENTS))
def test_solution_gets_full_marks(graded_course, assignment):
    scores, graded = graded_course.grade(assignment, graded_course.notebook(assignment, "solution"))
    assert scores, "no grade cells were scored"
    for grade_id, (score, max_score) in scores.items():
        if needs_gpu_here(grade_id):
            assert score == 0 and GPU_MESSAGE in cell_output_text(graded, grade_id), (
                f"{grade_id} should fail on a CPU-only grader with the GPU message")
        else:
            assert score == max_score, f"{grade_id}: {score}/{max_score}\n{cell_output_text(graded, grade_id)}"
    notes = [c for c in graded["cells"] if "course_grading_notes" in c.get("metadata", {})]
    assert not notes, f"a reference solution graded with notes or flags: {notes[0]['source']}"


@pytest.mark.parametrize("assignment", _by_assignment(ASSIGNMENTS))
def test_blank_release_gets_zero_with_reasons(graded_course, assignment):
    scores, graded = graded_course.grade(assignment, graded_course.notebook(assignment, "release"))
    assert scores, "no grade cells were scored"
    for grade_id, (score, _) in scores.items():
        assert score == 0, f"{grade_id} gave points for an empty answer"
        said = cell_output_text(graded, grade_id)
        assert any(reason in said for reason in ("NotImplementedError", "not implemented", "not defined",
                                                  GPU_MESSAGE)), f"{grade_id} failed without a reason:\n{said}"


def test_the_kernel_engine_with_the_clean_room_gives_the_solution_full_marks(graded_course):
    """--engine kernel: nbgrader autograde in a kernel, then the clean room's verdict on top."""
    import json
    from instructor.grading import kernel, sandbox, worker
    nb = graded_course.notebook("ex1_memory", "solution")
    limits = sandbox.Limits(cell_timeout=300, notebook_timeout=900, memory_mb=6000, engine="kernel")
    result = worker.grade_one(worker.Job("k1", "ex1_memory", json.dumps(nb).encode(),
                                         kernel.make_template("ex1_memory"), limits))
    assert result.status == "graded" and result.cleanroom is not None, result.notes
    assert result.score == result.max_score and not result.notes, (result.scores, result.notes)


@pytest.mark.parametrize("assignment", _by_assignment(ASSIGNMENTS))
def test_stock_nbgrader_agrees_cell_by_cell(graded_course, assignment):
    """The clean room (the judge in the worker) and plain nbgrader in a Jupyter kernel (the judge in the
    notebook's process) score the solution and the blank release alike.

    Stock nbgrader gets the cells the clean room runs: the notebook up to its last graded cell (what follows
    can change no grade, and holds the costly demonstrations: training runs, sweeps, generation)."""
    steps = ("solution", "release")
    notebooks = [graded_course.notebook(assignment, step) for step in steps]
    # nbgrader's autograde, the checks judging in the kernel (with the course's resource limits)
    stock = graded_course.grade_stock(assignment, [up_to_last_graded_cell(nb) for nb in notebooks])
    for step, nb, (theirs, _) in zip(steps, notebooks, stock):
        ours, _ = graded_course.grade(assignment, nb)
        assert ours == theirs, (step, {g: (ours[g], theirs.get(g)) for g in ours if ours[g] != theirs.get(g)})


def up_to_last_graded_cell(nb: dict) -> dict:
    last = last_graded_cell(nbformat.from_dict(nb))
    assert last < len(nb["cells"])
    return {**nb, "cells": nb["cells"][:last + 1]}
