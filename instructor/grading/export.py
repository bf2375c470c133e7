"""grades.csv for the LMS: one row per student, one column per exercise, then the total.

An nbgrader export plugin, so it is `nbgrader export --exporter=instructor.grading.export.WideCsvExport
--to grades.csv` (what `python -m instructor export` runs). A score includes nbgrader's late penalty
and any manual adjustment made in formgrader. Every exercise has its column from the first export on;
a blank cell means no submission (yet).
"""
import csv
import pathlib

from nbgrader.api import MissingEntry
from nbgrader.plugins import ExportPlugin

from instructor import nbgrader_ops
from instructor.course.notebooks import ASSIGNMENTS, REFERENCE_STUDENT, ROOT


class WideCsvExport(ExportPlugin):
    def export(self, gradebook):
        known = {a.name for a in gradebook.assignments}
        assignments = ASSIGNMENTS + sorted(known - set(ASSIGNMENTS))  # the same columns all term
        with open(self.to or "grades.csv", "w", newline="", encoding="utf-8") as f:
            out = csv.writer(f)
            out.writerow(["student_id", *assignments, "total"])
            for student in sorted(gradebook.students, key=lambda s: s.id):
                if student.id == REFERENCE_STUDENT:  # `make course`'s run of the solutions
                    continue
                scores = []
                for assignment in assignments:
                    try:
                        scores.append(gradebook.find_submission(assignment, student.id).score)
                    except MissingEntry:
                        scores.append(None)
                if any(s is not None for s in scores):
                    out.writerow([student.id, *("" if s is None else f"{s:g}" for s in scores),
                                  f"{sum(s or 0 for s in scores):g}"])


def export(path, root=ROOT):
    path = pathlib.Path(path).resolve()  # nbgrader runs in the course root; the path is the caller's
    nbgrader_ops._run(["export", "--exporter=instructor.grading.export.WideCsvExport", f"--to={path}"], root)
    return path
