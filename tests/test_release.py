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


def _solution_only_lines(assignment):
    """Substantive lines of the source's solution regions that appear nowhere else in the source
    (a line such as `loss.backward()` that the notebook also shows outside a solution is no leak)."""
    solution, elsewhere = [], []
    for cell in read_notebook(notebook_path(assignment))["cells"]:
        body = "".join(cell["source"])
        regions = re.findall(r"### BEGIN SOLUTION\n(.*?)### END SOLUTION", body, re.S)
        solution += [ln.strip() for region in regions for ln in region.splitlines()
                     if len(ln.strip()) > 12 and not ln.strip().startswith("#")]
        elsewhere.append(re.sub(r"### BEGIN (SOLUTION|HIDDEN TESTS).*?### END (SOLUTION|HIDDEN TESTS)", "", body,
                                flags=re.S))
    outside = "\n".join(elsewhere)
    return [ln for ln in solution if ln not in outside]


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_release_holds_no_solutions_or_hidden_tests(assignment):
    release = read_notebook(notebook_path(assignment, "release"))
    everything = "\n".join("".join(c["source"]) for c in release["cells"])
    for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "graders"):
        assert marker not in everything, f"release/{assignment} contains {marker!r}"
    code = "\n".join("".join(c["source"]) for c in release["cells"] if c["cell_type"] == "code")
    leaked = [ln for ln in _solution_only_lines(assignment) if ln in code]
    assert not leaked, f"solution code visible to students: {leaked[:3]}"
