"""The class grader's bookkeeping, without running any notebook: what it says when there is nothing
(or nothing usable) to grade, and how it sizes itself."""
import csv
import json
import os
import shutil

import pytest

from instructor import nbgrader_ops
from instructor.grading import schedule, export, feedback
from instructor.__main__ import main
from instructor.course.notebooks import ASSIGNMENTS, REFERENCE_STUDENT, read_notebook
from tests.course import ScratchCourse


def test_no_submissions_is_said_not_silently_passed(graded_course):
    said = []
    results = schedule.grade_class(["ex1_memory"], graded_course.root, students=["nobody-here"], echo=said.append)
    assert results == []
    assert "No submissions of ex1_memory" in said[0] and "instructor collect" in said[0]


def test_a_folder_without_one_notebook_is_rejected_with_a_reason(graded_course):
    folder = graded_course.root / "submitted" / "two-files" / "ex1_memory"
    folder.mkdir(parents=True)
    for name in ("mine.ipynb", "Copy of mine.ipynb"):
        (folder / name).write_text("{}")
    results = schedule.grade_class(["ex1_memory"], graded_course.root, students=["two-files"], echo=lambda *a: None)
    [result] = results
    assert result.status == "rejected" and result.score == 0 and "no single notebook" in result.notes[0]
    recorded = nbgrader_ops.cell_scores("ex1_memory", "two-files", graded_course.root)
    assert recorded and all(score == 0 for score, _ in recorded.values())
    graded = graded_course.root / "autograded" / "two-files" / "ex1_memory" / "ex1_memory.ipynb"
    assert "no single notebook" in graded.read_text(), "the reason heads the notebook its feedback is made from"


def test_unknown_exercise_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["grade", "ex9_nothing"])
    assert exit.value.code == 2
    assert "unknown assignment(s) ex9_nothing" in capsys.readouterr().err


def test_workers_fit_cores_and_memory():
    assert 1 <= schedule.default_workers() <= (os.cpu_count() or 1)


def test_feedback_and_export_leave_out_the_reference_run_and_strays(tmp_path):
    """`make course` leaves autograded/reference/ (committed) and a `reference` student in the gradebook."""
    course = ScratchCourse(tmp_path)
    # what the reference run leaves behind, not its grade: the text cells suffice (no code, so no torch to import)
    source = read_notebook(course.root / "source/ex1_memory/ex1_memory.ipynb")
    text_only = tmp_path / "reference.ipynb"
    text_only.write_text(json.dumps({**source, "cells": [c for c in source["cells"] if c["cell_type"] == "markdown"]}))
    nbgrader_ops.submit("ex1_memory", REFERENCE_STUDENT, text_only, tmp_path)
    nbgrader_ops.autograde("ex1_memory", REFERENCE_STUDENT, tmp_path)
    folder = tmp_path / "submitted" / "kim" / "ex1_memory"
    folder.mkdir(parents=True)
    (folder / "a.ipynb").write_text("{}")
    (folder / "b.ipynb").write_text("{}")
    results = schedule.grade_class(["ex1_memory"], tmp_path, echo=lambda *a: None)
    assert [r.student for r in results] == ["kim"], "the reference run is not one of the class"
    stray = tmp_path / "autograded" / "stray" / "ex1_memory"
    stray.mkdir(parents=True)
    shutil.copy(tmp_path / "autograded" / "kim" / "ex1_memory" / "ex1_memory.ipynb", stray)

    feedback.generate(["ex1_memory"], tmp_path)
    assert [p.name for p in (tmp_path / "feedback").iterdir()] == ["kim"]
    with open(export.export(tmp_path / "grades.csv", tmp_path), newline="") as f:
        rows = list(csv.reader(f))
    assert rows == [["student_id", *ASSIGNMENTS, "total"], ["kim", "0", "", "", "", "", "0"]]
