"""Graders fail real mistakes and accept every correct solution, proven through nbgrader itself.

For each graded answer, tests/answers/<assignment>.py lists realistic wrong versions and a correct
one written differently. A wrong answer must lose exactly its own test cells' points."""
import importlib.util

import pytest

from instructor.course.notebooks import ASSIGNMENTS, CUDA_TEST_PREFIX, notebook_path, read_notebook
from tests.course import HAS_CUDA, answer_of, answers_module, cell_output_text, solution_cells, cells_grading, with_cell

pytestmark = pytest.mark.slow

WITH_ANSWERS = [a for a in ASSIGNMENTS if importlib.util.find_spec(f"tests.answers.{a}")]


def _wrong_answers():
    for a in WITH_ANSWERS:
        for answer, variants in answers_module(a).WRONG.items():
            for label, source in variants:
                yield pytest.param(a, answer, source, id=f"{a}:{answer}:{label}")


def _cpu_only_blind(scores, grade_id):
    return grade_id.startswith(CUDA_TEST_PREFIX) and not HAS_CUDA


@pytest.mark.parametrize("assignment", WITH_ANSWERS)
def test_every_answer_has_wrong_and_alternative_versions(assignment):
    module = answers_module(assignment)
    source = read_notebook(notebook_path(assignment))
    for answer in solution_cells(source):
        assert cells_grading(source, answer), f"{answer} has no test cell named test_{answer}"
        assert len(module.WRONG.get(answer, [])) >= 2, f"{answer}: fewer than two realistic wrong answers"
        assert answer in module.ALTERNATIVE, f"{answer}: no alternative correct answer"


@pytest.mark.parametrize("assignment, answer, source", list(_wrong_answers()))
def test_wrong_answer_loses_exactly_its_points(graded_course, assignment, answer, source):
    solution = graded_course.notebook(assignment, "solution")
    own = cells_grading(solution, answer)
    if not HAS_CUDA and all(g.startswith(CUDA_TEST_PREFIX) for g in own):
        pytest.skip(f"{answer} is graded only on a CUDA GPU (see docs/gpu.md for the GPU run)")
    scores, graded = graded_course.grade(assignment, with_cell(solution, answer, source))
    for grade_id, (score, max_score) in scores.items():
        if _cpu_only_blind(scores, grade_id):
            continue
        said = cell_output_text(graded, grade_id)
        if grade_id in own:
            assert score == 0, f"the wrong answer still earned {grade_id}"
            assert "CheckFailed" in said, f"{grade_id} failed without a grader message:\n{said}"
        else:
            assert score == max_score, f"a wrong {answer} also cost {grade_id}:\n{said}"


@pytest.mark.parametrize("assignment", WITH_ANSWERS)
def test_answers_written_differently_keep_full_marks(graded_course, assignment):
    """Every alternative answer at once, as one student who wrote each answer their own way would: each check
    calls its answer alone (the grader's own inputs and dependencies), so one grading proves them all, and a
    cell that loses points names the answer it grades."""
    nb = graded_course.notebook(assignment, "solution")
    for answer, source in answers_module(assignment).ALTERNATIVE.items():
        nb = with_cell(nb, answer, source)
    scores, graded = graded_course.grade(assignment, nb)
    for grade_id, (score, max_score) in scores.items():
        if not _cpu_only_blind(scores, grade_id):
            assert score == max_score, (f"{answer_of(grade_id)} written differently: {grade_id} {score}/{max_score}\n"
                                        f"{cell_output_text(graded, grade_id)}")


WARNS = '''def absmax_quantize(w):
    max_abs = w.abs().max()
    scale = torch.tensor(max_abs / 127) if max_abs > 0 else torch.tensor(1.0)  # torch.tensor(a tensor) warns
    return torch.round(w / scale).clamp(-127, 127).to(torch.int8), scale
'''


def test_a_library_warning_costs_nothing(graded_course):
    """torch warns (on stderr, which nbgrader's own rule turns into a zero) when a tensor is copied with
    torch.tensor(...): the answer is right, so the judge passes it, and the warning is shown, not charged."""
    nb = with_cell(graded_course.notebook("ex2_quantization", "solution"), "absmax_quantize", WARNS)
    scores, graded = graded_course.grade("ex2_quantization", nb)
    assert scores["test_absmax_quantize"] == (3.0, 3.0), cell_output_text(graded, "test_absmax_quantize")
    said = cell_output_text(graded, "test_absmax_quantize")
    assert "To copy construct from a tensor" in said and "Warnings while it ran, which cost nothing" in said, said
