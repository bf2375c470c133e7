"""The whole nbgrader cycle on every notebook: solutions get full marks, the untouched release gets zero."""
import pytest

from instructor.notebooks import ASSIGNMENTS, CUDA_TEST_PREFIX
from tests.course import GPU_MESSAGE, HAS_CUDA, cell_output_text

pytestmark = pytest.mark.slow


def needs_gpu_here(grade_id: str) -> bool:
    return grade_id.startswith(CUDA_TEST_PREFIX) and not HAS_CUDA


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_solution_gets_full_marks(graded_course, assignment):
    scores, graded = graded_course.grade(assignment, graded_course.notebook(assignment, "solution"))
    assert scores, "no grade cells were scored"
    for grade_id, (score, max_score) in scores.items():
        if needs_gpu_here(grade_id):
            assert score == 0 and GPU_MESSAGE in cell_output_text(graded, grade_id), (
                f"{grade_id} should fail on a CPU-only grader with the GPU message")
        else:
            assert score == max_score, f"{grade_id}: {score}/{max_score}\n{cell_output_text(graded, grade_id)}"


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_blank_release_gets_zero_with_reasons(graded_course, assignment):
    scores, graded = graded_course.grade(assignment, graded_course.notebook(assignment, "release"))
    assert scores, "no grade cells were scored"
    for grade_id, (score, _) in scores.items():
        assert score == 0, f"{grade_id} gave points for an empty answer"
        said = cell_output_text(graded, grade_id)
        assert any(reason in said for reason in ("NotImplementedError", "not implemented", "not defined",
                                                  GPU_MESSAGE)), f"{grade_id} failed without a reason:\n{said}"
