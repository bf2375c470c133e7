"""release/ and solution/ are exactly what nbgrader generates from source/, and release/ gives nothing away."""
import re

import pytest

from instructor.course.notebooks import ASSIGNMENTS, notebook_path, read_notebook


@pytest.mark.parametrize("step", ["release", "solution"])
@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_generated_versions_are_in_sync_with_source(graded_course, assignment, step):
    """graded_course generates its versions from a copy of source/ (the same ones the autograde tests use)."""
    committed = read_notebook(notebook_path(assignment, step))
    assert committed == graded_course.notebook(assignment, step), (
        f"{step}/{assignment} is out of date: run `make build` and commit it")


# Lines so generic that a notebook may show them outside the answer that also needs them.
GENERIC = {"optimizer.zero_grad()", "loss.backward()", "optimizer.step()", "return model", "return result",
           "model.eval()", "model.train()", "with torch.no_grad():"}


def _answer_lines(assignment):
    """Substantive lines of the source's solution regions: each one is the answer's, wherever else it shows."""
    lines = []
    for cell in read_notebook(notebook_path(assignment))["cells"]:
        for region in re.findall(r"### BEGIN SOLUTION\n(.*?)### END SOLUTION", "".join(cell["source"]), re.S):
            lines += [ln.strip() for ln in region.splitlines()
                      if len(ln.strip()) > 12 and not ln.strip().startswith("#") and ln.strip() not in GENERIC]
    return lines


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_release_holds_no_solutions_or_hidden_tests(assignment):
    release = read_notebook(notebook_path(assignment, "release"))
    everything = "\n".join("".join(c["source"]) for c in release["cells"])
    for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "graders"):
        assert marker not in everything, f"release/{assignment} contains {marker!r}"
    # Any cell counts, code or prose: a later cell that restates an answer's line gives the answer away
    # (later cells call the student's functions instead).
    leaked = sorted({ln for ln in _answer_lines(assignment) if ln in everything})
    assert not leaked, f"answer lines visible to students outside their answer cells: {leaked}"


def test_a_notebook_saved_by_jupyter_reads_like_one_edited_here(tmp_path):
    """Jupyter writes each cell's source as a list of lines; read_notebook joins them, as nbformat does."""
    import json
    nb = read_notebook(notebook_path("ex1_memory"))
    as_lines = json.loads(json.dumps(nb))
    for cell in as_lines["cells"]:
        cell["source"] = cell["source"].splitlines(keepends=True)
    path = tmp_path / "saved.ipynb"
    path.write_text(json.dumps(as_lines, indent=1))
    assert read_notebook(path) == nb
