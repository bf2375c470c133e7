"""Static checks of the source notebooks: valid, output-free, one setup, sound nbgrader metadata,
and none of the old notebook's defects."""
import re

import nbformat
import pytest

from instructor.course.notebooks import ASSIGNMENTS, notebook_path, read_notebook, setup_cells
from tests.course import solution_cells, cells_grading


def cells(assignment):
    return read_notebook(notebook_path(assignment))["cells"]


def text(cell):
    return "".join(cell["source"])


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_source_notebook_is_valid_and_has_no_outputs(assignment):
    nbformat.validate(nbformat.read(notebook_path(assignment), as_version=4))
    for cell in cells(assignment):
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, "source notebooks carry no outputs"


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_notebook_starts_with_colab_badge_and_the_setup_cell(assignment):
    expected = setup_cells(assignment)
    for cell, want in zip(cells(assignment)[:2], expected):
        assert cell["cell_type"] == want["cell_type"] and text(cell) == want["source"]


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_nbgrader_metadata_is_sound(assignment):
    nb = read_notebook(notebook_path(assignment))
    ids = [c["metadata"]["nbgrader"]["grade_id"] for c in nb["cells"] if "nbgrader" in c["metadata"]]
    assert len(ids) == len(set(ids)), "grade_ids must be unique"
    answers = solution_cells(nb)
    assert answers, "no autograded answers"
    for cell in nb["cells"]:
        meta = cell["metadata"].get("nbgrader", {})
        if meta.get("solution"):
            assert "### BEGIN SOLUTION" in text(cell) and "### END SOLUTION" in text(cell), meta["grade_id"]
        if meta.get("grade"):
            assert meta.get("points", 0) > 0, f"{meta['grade_id']} is worth no points"
            hidden = text(cell).split("### BEGIN HIDDEN TESTS")
            assert len(hidden) == 2 and "graders" in hidden[1], f"{meta['grade_id']}: hidden tests must call graders/"
    for answer in answers:
        assert cells_grading(nb, answer), f"answer {answer} has no test cell"


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_notebook_teaches_predict_then_run(assignment):
    prose = "\n".join(text(c) for c in cells(assignment) if c["cell_type"] == "markdown").lower()
    assert "predict" in prose and "what you just saw" in prose


DEFECTS = {
    r"\.total_mem\b": "the attribute is total_memory",
    r"load_dataset\(\s*['\"]karpathy/tiny_shakespeare": "script datasets no longer load: use utils.load_shakespeare",
    r"from_pretrained\([^)]*load_in_(4|8)bit": "use quantization_config=BitsAndBytesConfig(...)",
    r"<details": "no solutions hidden in markdown",
}


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_none_of_the_old_notebooks_defects(assignment):
    for cell in cells(assignment):
        for pattern, why in DEFECTS.items():
            assert not re.search(pattern, text(cell)), f"{pattern}: {why}"
