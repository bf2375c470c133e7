"""The instructor's whole cycle on a generated class of 30: collect, grade in parallel, feedback, grades.csv.

Every submission must get the grade tests/fake_class.py derives for it (per test cell) and the reason
it derives; since all 30 are graded together, a broken, hanging or hostile notebook that changed any
other's grade would fail that other's test."""
import csv
import html
import json
import re
import types

import pytest

from instructor import nbgrader_ops
from instructor.grading import collect, export, feedback, kernel, sandbox, schedule, worker
from instructor.course.notebooks import ASSIGNMENTS, ROOT, notebook_path, read_notebook
from tests import fake_class
from tests.course import ScratchCourse, up_to_last_of

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("class-of-30")]  # one worker grades the class, once
LIMITS = sandbox.Limits(cell_timeout=20, notebook_timeout=600, memory_mb=4000)
SUBMISSIONS = [(a, kind) for a, kinds in fake_class.CLASS.items() for kind in kinds]


# session, not module: a worker runs other modules' tests in between, and pytest would build a
# module fixture again after each interruption (it did, doubling the cost)
@pytest.fixture(scope="session")
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("class")
    course = ScratchCourse(root)
    namespaces = sandbox.namespaces_available()
    submissions = fake_class.make_class(course, with_namespaces=namespaces)
    fake_class.write_downloads(submissions, root / "downloads")
    records = collect.collect([root / "downloads"], root)
    results = schedule.grade_class(list(fake_class.CLASS), root, plan=schedule.Plan(workers=2, limits=LIMITS))
    feedback.generate(list(fake_class.CLASS), root)
    export.export(root / "grades.csv", root)
    return types.SimpleNamespace(root=root, submissions=submissions, records=records, namespaces=namespaces,
                                 results={(r.student, r.assignment): r for r in results})


def submission(graded, assignment, kind):
    sub = next((s for s in graded.submissions if (s.assignment, s.kind) == (assignment, kind)), None)
    if sub is None:
        pytest.skip(f"{kind!r} is generated only where Linux namespaces isolate the grading (not on this machine)")
    return sub, graded.results[(sub.student, sub.assignment)]


def test_collect_places_all_30_under_the_right_student_and_exercise(graded):
    placed = {(r["student"], r["assignment"]) for r in graded.records if r["status"] == "placed"}
    assert placed == {(s.student, s.assignment) for s in graded.submissions}
    for s in graded.submissions:
        assert (graded.root / "submitted" / s.student / s.assignment / f"{s.assignment}.ipynb").read_bytes() == s.data


@pytest.mark.parametrize("assignment, kind", SUBMISSIONS, ids=[f"{a}:{k}" for a, k in SUBMISSIONS])
def test_each_submission_gets_its_grade_and_its_reason(graded, assignment, kind):
    sub, result = submission(graded, assignment, kind)
    assert result.status == sub.status, result.notes
    assert {g: s for g, (s, _) in result.scores.items()} == sub.expected, result.notes
    if sub.says:
        phrases = sub.says if isinstance(sub.says, tuple) else (sub.says,)
        assert any(phrase in note for phrase in phrases for note in result.notes), result.notes
    if result.status == "graded":  # what the instructor's gradebook holds is the same
        recorded = nbgrader_ops.cell_scores(assignment, sub.student, graded.root)
        assert {g: s for g, (s, _) in recorded.items()} == sub.expected


def test_a_clean_submission_gets_no_notes(graded):
    for (student, assignment), result in graded.results.items():
        sub = next(s for s in graded.submissions if (s.student, s.assignment) == (student, assignment))
        if sub.kind in ("correct", "correct, written differently", "blank", "partial", "partial, two answers"):
            assert result.notes == [] and result.flags == [], (sub.kind, result.notes)


def _hidden_lines(assignment) -> set:
    lines = set()
    for cell in read_notebook(notebook_path(assignment))["cells"]:
        for region in re.findall(r"### BEGIN HIDDEN TESTS\n(.*?)### END HIDDEN TESTS", "".join(cell["source"]), re.S):
            lines |= {ln.strip() for ln in region.splitlines() if len(ln.strip()) > 8}
    return lines


def test_feedback_shows_scores_and_notes_but_no_hidden_test_code(graded):
    for sub in graded.submissions:
        page = (graded.root / "feedback" / sub.student / sub.assignment / f"{sub.assignment}.html").read_text()
        result = graded.results[(sub.student, sub.assignment)]
        leaked = [ln for ln in _hidden_lines(sub.assignment) if html.escape(ln) in page or ln in page]
        assert not leaked, f"{sub.student}/{sub.assignment} feedback shows hidden test code: {leaked[:2]}"
        assert "BEGIN HIDDEN" not in page and "from graders import" not in page
        assert f"Score: {result.score:.1f} / {result.max_score:.1f})" in page  # nbgrader's header
        text = re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", "", page)))
        for note in result.notes:
            assert note.replace("`", "")[1:60] in text, f"feedback for {sub.student}/{sub.assignment} lacks: {note}"


def test_grades_csv_has_a_row_per_student_and_a_column_per_exercise(graded):
    with open(graded.root / "grades.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["student_id", *ASSIGNMENTS, "total"]
    table = {row[0]: row[1:] for row in rows[1:]}
    assert set(table) == {s.student for s in graded.submissions}
    for student, cells in table.items():
        mine = {s.assignment: s.expected_total for s in graded.submissions if s.student == student}
        assert cells[:-1] == [f"{mine[a]:g}" if a in mine else "" for a in ASSIGNMENTS]
        assert float(cells[-1]) == sum(mine.values())


def test_report_lists_every_submission_with_its_notes(graded, tmp_path):
    path = schedule.write_report(graded.results.values(), tmp_path / "report.csv")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 30 and {r["status"] for r in rows} == {"graded", "rejected"}
    assert all(r["notes"] for r in rows if r["status"] == "rejected")


def test_a_notebook_cannot_write_outside_its_sandbox(graded):
    sub, result = submission(graded, "ex4_peft_finetuning", "writes outside its sandbox")
    assert result.score == sub.expected_total
    assert not (ROOT / "graders" / "poisoned.py").exists()
    assert "Read-only file system" in result.notebook, result.notes


@pytest.mark.parametrize("assignment", list(fake_class.TAMPERING))
def test_in_stock_nbgrader_the_tampering_would_have_paid(graded, assignment):
    """Proof that the tampering submissions test something: graded as stock nbgrader grades (the checks judging
    in the notebook's own kernel), the wrong answer's test cells score. Graded up to the last of them (what
    follows changes none of their grades, and costs seconds)."""
    sub, result = submission(graded, assignment, "tampering hides a wrong answer")
    hidden = [g for g, points in sub.expected.items() if points == 0]  # the wrong answer's cells, zero here
    assert hidden and all(result.scores[g][0] == 0 for g in hidden) and result.score == sub.expected_total
    job = worker.Job(sub.student, assignment, json.dumps(up_to_last_of(json.loads(sub.data), hidden)).encode(),
                     kernel.make_template(assignment),
                     sandbox.Limits(cell_timeout=20, memory_mb=4000, engine="kernel", cleanroom=False))
    unguarded = worker.grade_one(job)
    assert unguarded.status == "graded", unguarded.notes
    assert all(unguarded.scores[g][0] == unguarded.scores[g][1] > 0 for g in hidden), unguarded.scores
