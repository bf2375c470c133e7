"""What the grader makes of a submitted file before anything runs (instructor/grading/intake.py)."""
import copy
import json

import pytest

from instructor.grading.intake import MAX_BYTES, check_submission
from instructor.course.notebooks import ASSIGNMENTS, notebook_path, read_notebook

A = "ex1_memory"


def as_bytes(nb) -> bytes:
    return json.dumps(nb).encode()


def grade_id(cell):
    return cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")


@pytest.fixture
def solution():
    return read_notebook(notebook_path(A, "solution"))


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
@pytest.mark.parametrize("step", ["release", "solution"])
def test_the_course_own_notebooks_pass_untouched(assignment, step):
    checked = check_submission(notebook_path(assignment, step).read_bytes(), assignment)
    assert checked.rejected is None and checked.notes == [] and checked.flags == []


@pytest.mark.parametrize("data, says", [
    (b"%PDF-1.7 \xff\xfe binary", "not text"),
    (b'{"cells": [', "JSON is broken at line 1"),
    (b'{"metadata": {}}', "not a Jupyter notebook"),
    (b'{"cells": [{"cell_type": "spreadsheet"}], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}',
     "not a valid Jupyter notebook"),
    (b"x" * (MAX_BYTES + 1), "the largest accepted is 64 MB"),
])
def test_files_that_are_not_notebooks_are_rejected_with_a_reason(data, says):
    checked = check_submission(data, A)
    assert checked.notebook is None and says in checked.rejected


def test_another_exercise_notebook_is_named(solution):
    checked = check_submission(notebook_path("ex3_lora_from_scratch", "release").read_bytes(), A)
    assert "this is the notebook of ex3_lora_from_scratch, not of ex1_memory" in checked.rejected
    for cell in solution["cells"]:
        cell["metadata"].pop("nbgrader", None)
    assert "has none of ex1_memory's cells" in check_submission(as_bytes(solution), A).rejected


def test_deleted_test_and_course_cells_are_put_back_in_place(solution):
    release = read_notebook(notebook_path(A, "release"))
    nb = copy.deepcopy(solution)
    nb["cells"] = [c for c in nb["cells"] if grade_id(c) not in ("test_to_gb", "setup", "md_3")]
    checked = check_submission(as_bytes(nb), A)
    assert [grade_id(c) for c in checked.notebook.cells] == [grade_id(c) for c in release["cells"]]
    assert "the test cell `test_to_gb` had been deleted; it was put back" in checked.notes
    assert any("2 of the course's own cells" in n for n in checked.notes)


def test_edited_test_cells_and_metadata_are_restored(solution):
    nb = copy.deepcopy(solution)
    test = next(c for c in nb["cells"] if grade_id(c) == "test_to_gb")
    test["source"] = "print('all good')"
    test["metadata"]["nbgrader"].update(points=100, locked=False, grade=False)
    checked = check_submission(as_bytes(nb), A)
    restored = next(c for c in checked.notebook.cells if grade_id(c) == "test_to_gb")
    want = next(c for c in read_notebook(notebook_path(A, "release"))["cells"] if grade_id(c) == "test_to_gb")
    assert restored.source == "".join(want["source"]) and restored.metadata.nbgrader == want["metadata"]["nbgrader"]
    assert "the test cell `test_to_gb` had been edited; it was restored" in checked.notes


def test_invented_and_copied_grade_cells_become_ordinary_code(solution):
    nb = copy.deepcopy(solution)
    test = next(c for c in nb["cells"] if grade_id(c) == "test_to_gb")
    bonus = copy.deepcopy(test)
    bonus["metadata"]["nbgrader"].update(grade_id="bonus", points=100)
    nb["cells"] += [bonus, copy.deepcopy(test)]
    checked = check_submission(as_bytes(nb), A)
    assert [grade_id(c) for c in checked.notebook.cells[-2:]] == [None, None]
    assert any("`bonus`; it was run as ordinary code" in n for n in checked.notes)
    assert any("a copy of `test_to_gb`" in n for n in checked.notes)


def test_a_deleted_answer_is_reported_not_invented(solution):
    nb = copy.deepcopy(solution)
    nb["cells"] = [c for c in nb["cells"] if grade_id(c) != "to_gb"]
    checked = check_submission(as_bytes(nb), A)
    assert "to_gb" not in {grade_id(c) for c in checked.notebook.cells}
    assert "the answer cell `to_gb` is missing (deleted?)" in checked.notes


def test_code_reaching_for_the_graders_is_flagged_not_penalised(solution):
    nb = copy.deepcopy(solution)
    nb["cells"].append({"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
                        "source": "import graders.ex1_memory as g"})
    checked = check_submission(as_bytes(nb), A)
    assert checked.rejected is None and checked.notes == []
    assert checked.flags == [f"cell {len(nb['cells'])} mentions `graders`"]


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_a_notebook_as_publish_gave_it_is_the_course_s_own(assignment, tmp_path):
    """`python -m instructor publish --repo OWNER/NAME` points the badge and setup cells at the student
    repository: handed in as published, those cells are the course's, so no note, and the student's own setup
    cell is what feedback shows. An edit to them is still restored, with the note."""
    from instructor.course import publish
    publish.publish(tmp_path / "student-repo", "octo-org/llm-course", "spring", git=False)
    published = json.loads((tmp_path / "student-repo" / publish.student_path(assignment)).read_text())
    answers = {grade_id(c): c["source"] for c in read_notebook(notebook_path(assignment, "solution"))["cells"]}
    for cell in published["cells"]:
        if cell.get("metadata", {}).get("nbgrader", {}).get("solution"):
            cell["source"] = answers[grade_id(cell)]
    checked = check_submission(as_bytes(published), assignment)
    assert checked.notes == [] and checked.flags == [], checked.notes
    setup = next(c for c in checked.notebook.cells if grade_id(c) == "setup")
    assert "https://github.com/octo-org/llm-course" in setup.source and "your-org" not in setup.source
    edited = copy.deepcopy(published)
    next(c for c in edited["cells"] if grade_id(c) == "setup")["source"] += "\nimport os; os.system('curl evil')"
    checked = check_submission(as_bytes(edited), assignment)
    assert checked.notes == ["1 of the course's own cells (text or code you were not meant to change) had been "
                             "edited or deleted; they were restored"], checked.notes
