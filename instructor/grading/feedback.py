"""Feedback for students: nbgrader's generate_feedback, with nothing of the hidden tests in it.

nbgrader_config.py adds `HideHiddenTests` to the feedback steps, so both `nbgrader generate_feedback`
and `python -m instructor feedback` use it. Students see each test cell's visible self-checks and what
every check said (a one-line message naming what was expected), never the hidden code or a traceback
through the graders.
"""
import pathlib

from nbgrader import utils
from nbgrader.preprocessors import ClearHiddenTests

from instructor import nbgrader_ops
from instructor.course.notebooks import REFERENCE_STUDENT, ROOT

GRADER_TRACES = ("graders", "File ", "Traceback", "---------")


class HideHiddenTests(ClearHiddenTests):
    """Remove hidden test code from test cells, and any traceback that could quote it."""

    enforce_metadata = False  # a cell the autograder replaced carries no hidden tests; that is fine

    def preprocess_cell(self, cell, resources, cell_index):
        cell, resources = super().preprocess_cell(cell, resources, cell_index)
        if cell.cell_type == "code" and utils.is_grade(cell):
            for output in cell.get("outputs", []):
                if output.get("output_type") == "error" and self._may_quote_code(output):
                    output["traceback"] = [f"{output.get('ename', 'Error')}: {output.get('evalue', '')}"]
        return cell, resources

    @staticmethod
    def _may_quote_code(output) -> bool:
        lines = output.get("traceback", [])
        return len(lines) != 1 or any(mark in lines[0] for mark in GRADER_TRACES)


def generate(assignments, root=ROOT) -> None:
    """feedback/<student>/<assignment>/<assignment>.html for every graded submission of `assignments`
    (not for `make course`'s reference run, nor a folder in autograded/ the gradebook does not know)."""
    for assignment in assignments:
        notebooks = (pathlib.Path(root) / "autograded").glob(f"*/{assignment}/{assignment}.ipynb")
        graded = {path.parent.parent.name for path in notebooks}
        students = graded & _students_with_submissions(assignment, root) - {REFERENCE_STUDENT}
        if students:
            nbgrader_ops._run(["generate_feedback", assignment, "--force",
                               f"--CourseDirectory.student_id_exclude={','.join(sorted(graded - students))}"], root)


def _students_with_submissions(assignment, root) -> set:
    from nbgrader.api import MissingEntry
    if not nbgrader_ops.gradebook_path(root).exists():
        return set()
    with nbgrader_ops.gradebook(root) as gb:
        try:
            return {s.student.id for s in gb.find_assignment(assignment).submissions}
        except MissingEntry:
            return set()
