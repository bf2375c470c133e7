"""The red team: every exploit in tests/redteam.py, graded the way a class is graded, never pays.

Each exploit rides on a wrong answer it tries to hide; the graded submission must lose exactly that
answer's points (every other test cell keeps its points) and say why. Honest notebooks that use
IPython as students do keep full marks with no note and no flag. Many exploits are graded once more
by `nbgrader autograde` in a Jupyter kernel with the tamper checks off (the notebook up to the hidden
answer's test cells), to show they are real: there, they pay.
"""
import functools
import json

import pytest

from instructor.grading import sandbox, worker
from instructor.course.notebooks import grade_cells, notebook_path, read_notebook
from tests.course import ScratchCourse, answers_module, cells_grading, solution_cells, up_to_last_of, with_cell
from tests.fake_class import _add_cell
from tests.redteam import EXPLOITS, HONEST

pytestmark = pytest.mark.slow

# Those that fool nbgrader in a Jupyter kernel when the tamper checks are off. (The others fail there too: nbgrader also reads the
# kernel's execute_reply, so hiding the error output alone is not enough; they are kept because each is a
# way in that a less careful grader would miss.)
PAY_WITHOUT_DEFENCES = [e.name for e in EXPLOITS if e.pays_in_a_plain_kernel]


@functools.cache
def _points(assignment) -> dict:
    return {g: float(p) for g, p in grade_cells(read_notebook(notebook_path(assignment))).items()}


def _submission(exploit) -> dict:
    if exploit.base == "release":
        nb = read_notebook(notebook_path(exploit.assignment, "release"))
        for answer in (solution_cells(nb) if exploit.answers else []):
            nb = with_cell(nb, answer, exploit.answers.format(name=answer))
        return _add_cell(nb, exploit.code, after=exploit.after)
    solution = read_notebook(notebook_path(exploit.assignment, "solution"))
    wrong = answers_module(exploit.assignment).WRONG[exploit.answer][exploit.wrong][1]
    return _add_cell(with_cell(solution, exploit.answer, wrong), exploit.code, after=exploit.after)


def _lost(exploit) -> set:
    """The test cells the exploit's wrong answers must not earn (all of them, for a blank notebook)."""
    source = read_notebook(notebook_path(exploit.assignment))
    return set(_points(exploit.assignment)) if exploit.base == "release" else set(cells_grading(source, exploit.answer))


def _grade(assignment, nb):
    """Graded as a class is: intake, then the clean room."""
    limits = sandbox.Limits(cell_timeout=60, notebook_timeout=600, memory_mb=4000)
    return worker.grade_one(worker.Job("mallory", assignment, json.dumps(nb).encode(), b"", limits))


def test_the_suite_covers_the_issue_families():
    families = {e.family for e in EXPLOITS}
    assert len(EXPLOITS) >= 30 and len({e.name for e in EXPLOITS}) == len(EXPLOITS)
    for family in ["input transformers", "AST transformers", "custom exception handlers", "traceback hooks",
                   "display hooks", "event callbacks", "kernel methods", "forged kernel messages", "settrace",
                   "setprofile", "frames", "garbage collector", "ctypes", "patched libraries",
                   "mutated grader objects", "a blank notebook dressed up", "the test cell's own names", "sys.modules",
                   "code under a library's name", "the outcome rewritten"]:
        assert family in families, family


@pytest.mark.parametrize("exploit", EXPLOITS, ids=[e.id for e in EXPLOITS])
def test_no_exploit_pays(exploit):
    result = _grade(exploit.assignment, _submission(exploit))
    lost = _lost(exploit)
    assert lost, exploit.answer
    if result.status in ("rejected", "failed"):  # nothing graded, and the reason given: nothing paid
        assert result.score == 0 and result.notes, result
        return
    assert result.status == "graded", (result.status, result.notes)
    # Nothing pays: the hidden wrong answer's cells score 0, and no cell more than the honest work earns. (An
    # exploit that silences every check, by swapping the collectors' module, earns nothing for any of them:
    # the judge never got their data.)
    for grade_id, points in _points(exploit.assignment).items():
        expected = 0.0 if grade_id in lost else points
        assert result.scores[grade_id][0] <= expected, (grade_id, result.scores, result.notes, result.flags)
    assert sum(s for g, (s, _) in result.scores.items() if g not in lost) > 0 or exploit.silences_every_check or \
        exploit.base == "release"
    # the student is told why: each lost check ends in an error in the graded notebook
    graded = json.loads(result.notebook)
    for cell in graded["cells"]:
        if cell["metadata"].get("nbgrader", {}).get("grade_id") in lost:
            assert any(o["output_type"] == "error" for o in cell["outputs"]), cell["outputs"]


@pytest.fixture(scope="session")
def stock_scores(tmp_path_factory) -> dict:
    """nbgrader's grade (tamper checks off) of every exploit in PAY_WITHOUT_DEFENCES, each notebook (up to the
    hidden answer's last test cell) in its own kernel as nbgrader runs them: one `nbgrader autograde` for all that
    leave the course alone; one course each for those that write into the gradebook (they would change every
    grade recorded after them). Scores only for the test cells each notebook has."""
    exploits = [e for e in EXPLOITS if e.name in PAY_WITHOUT_DEFENCES]
    batches = [[e] for e in exploits if e.family == "the gradebook"]
    for assignment in sorted({e.assignment for e in exploits}):
        batches.append([e for e in exploits if e.assignment == assignment and e.family != "the gradebook"])
    scores = {}
    for batch in filter(None, batches):
        course = ScratchCourse(tmp_path_factory.mktemp("stock"))
        # up to the hidden answer's last test cell (Exercise 1's GPT-2 skeleton, after it, imports transformers: 5 s)
        notebooks = []
        for e in batch:
            nb = _submission(e)
            notebooks.append(up_to_last_of(nb, _lost(e)))
        graded = course.grade_stock(batch[0].assignment, notebooks)
        for e, nb, (cells, _) in zip(batch, notebooks, graded):
            kept = grade_cells(nb)
            scores[e.name] = {g: points for g, points in cells.items() if g in kept}
    return scores


@pytest.mark.xdist_group("redteam-stock")
@pytest.mark.parametrize("name", PAY_WITHOUT_DEFENCES)
def test_the_exploits_are_real(stock_scores, name):
    """With the tamper checks off, these hide their wrong answer from nbgrader completely: full marks, the hidden
    answer's test cells included."""
    exploit = next(e for e in EXPLOITS if e.name == name)
    scores = stock_scores[name]
    lost = _lost(exploit)
    assert lost and lost <= scores.keys() <= _points(exploit.assignment).keys(), (lost, scores)
    assert all(score == max_score for score, max_score in scores.values()), scores


def test_honest_ipython_is_never_flagged():
    nb = read_notebook(notebook_path("ex1_memory", "solution"))
    for source in reversed(HONEST):
        nb = _add_cell(nb, source, after="to_gb")
    result = _grade("ex1_memory", nb)
    assert result.status == "graded" and result.score == result.max_score, (result.scores, result.notes)
    assert result.notes == [] and result.flags == []
    assert result.cleanroom.errors == {}, "every honest cell must run in the clean room too"
