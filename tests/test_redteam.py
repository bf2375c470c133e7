"""The red team: every exploit in tests/redteam.py, graded the way a class is graded, never pays.

Each exploit rides on a wrong answer it tries to hide (or dresses up the blank notebook); the wrong answer's
test cells must score nothing, no cell more than the honest work earns, and each says why. Programs that take the
notebook's process over and write on the channel earn nothing either. Honest notebooks that use IPython as
students do keep full marks with no note and no flag. Most exploits are graded once more by stock `nbgrader
autograde`, where the checks judge in the notebook's own kernel (the notebook up to the hidden answer's test
cells), to show they are real: there, they pay.
"""
import functools
import json
import os

import pytest

from instructor.grading import execute, intake, judge as judge_stage, sandbox, worker
from instructor.course.notebooks import grade_cells, notebook_path, read_notebook
from judges._core import Context
from tests.course import ScratchCourse, answers_module, cells_grading, solution_cells, up_to_last_of, with_cell
from tests.fake_class import _add_cell
from tests.redteam import EXPLOITS, HONEST

pytestmark = pytest.mark.slow

# Those that fool stock nbgrader, where the checks judge inside the notebook's kernel. (The others fail there too: nbgrader also reads the
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
                   "code under a library's name", "the outcome rewritten", "numbers that are not numbers"]:
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
    """Stock nbgrader's grade (the checks judging in the kernel) of every exploit in PAY_WITHOUT_DEFENCES, each notebook (up to the
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
    """Where the checks judge in the notebook's kernel, these hide their wrong answer from nbgrader completely:
    full marks, the hidden answer's test cells included."""
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


# -- the notebook's process replaced outright by a program that writes arbitrary records -------------------
TAKE_OVER = '''
import json, os, socket, stat
def _channel():
    for fd in range(3, 256):  # whatever socket this process holds: the grader's channel
        try:
            if stat.S_ISSOCK(os.fstat(fd).st_mode):
                return socket.socket(fileno=os.dup(fd))
        except OSError:
            pass
_sock, _pending = _channel(), b""
def send(message):
    _sock.sendall((message if isinstance(message, bytes) else json.dumps(message).encode()) + b"\\n")
def receive():
    global _pending
    while b"\\n" not in _pending:
        _pending += _sock.recv(1 << 20)
    line, _pending = _pending.split(b"\\n", 1)
    return json.loads(line)
'''
CHECKS = ["bytes_per_param", "memory_for_inference", "to_gb", "memory_for_training", "nf4_bits_per_param",
          "memory_for_finetuning"]
PROGRAMS = {
    "blank answers claiming every pass": '''
for name in CHECKS:
    send({"event": "answer", "check": name, "data": {"passed": True, "verdict": "pass"}})
    send({"event": "ask", "check": name})
    receive()
    send({"event": "answer", "check": name, "data": {"passed": True, "message": "all tests pass"}})
    receive()
for index in TEST_CELLS:
    send({"event": "start", "cell": index})
    send({"event": "done", "cell": index, "raised": False, "error": None, "seconds": 0.1,
          "outputs": [{"output_type": "stream", "name": "stdout", "text": "\\u2713 passed\\n"}]})
send({"event": "end"})
os._exit(0)
''',
    "garbage, malformed data and too much": '''
send(b"not json at all")
send(b"[1, 2, 3]")
for name in CHECKS[:3]:
    send({"event": "ask", "check": name})
    receive()
    send({"event": "answer", "check": name, "data": {"answer": {"defined": True, "callable": True, "type": "f"},
          "calls": [{"value": {"$tensor": {"dtype": "object", "shape": [1], "bytes": "x"}}}]}})
    receive()
send({"event": "ask", "check": CHECKS[3]})
receive()
send(b"x" * (70 * 2**20))
os._exit(0)
''',
    "replayed data of another student's grading": '''
for name, data in REPLAY:
    send({"event": "ask", "check": name})
    receive()
    send({"event": "answer", "check": name, "data": data})
    receive()
send({"event": "end"})
os._exit(0)
''',
}


def _fixed_seed(seed):
    """A judge context factory that draws the same inputs every time: the defence (fresh inputs) removed."""
    return lambda: Context(seed)


def _run(nb, context=None):
    """`nb` through intake and the clean room, as a class is graded, its checks judged with `context`."""
    limits = sandbox.Limits(cell_timeout=60, notebook_timeout=300, memory_mb=4000)
    isolation = "namespaces" if sandbox.namespaces_available() else "process"
    env = {**os.environ, "PYTHONPATH": sandbox.pythonpath(), "CUDA_VISIBLE_DEVICES": ""}
    checked = intake.check_submission(json.dumps(nb).encode(), "ex1_memory")
    return execute.verdicts(checked.notebook, "ex1_memory", None, env, limits, isolation, context=context)


def _program(nb, name, **values):
    """`nb` with a cell (after its imports) that takes the process over and runs the program `name`."""
    nb = _add_cell(nb, "")
    test_cells = [i for i, c in enumerate(nb["cells"]) if c.get("metadata", {}).get("nbgrader", {}).get("grade")]
    setup = TAKE_OVER + f"CHECKS = {CHECKS!r}\nTEST_CELLS = {test_cells!r}\n"
    setup += "".join(f"{key} = json.loads({json.dumps(json.dumps(value))})\n" for key, value in values.items())
    next(c for c in nb["cells"] if c.get("id", "").startswith("student-"))["source"] = setup + PROGRAMS[name]
    return nb


@pytest.mark.parametrize("name", ["blank answers claiming every pass", "garbage, malformed data and too much"])
def test_a_program_in_place_of_the_notebook_earns_nothing_with_its_claims(name):
    release = read_notebook(notebook_path("ex1_memory", "release"))
    nb = _program(release, name)
    room = _run(nb)
    assert not any(room.passed.values()), room.messages
    if name.startswith("blank"):
        # where the defence is absent, this pays: what the process reports about its cells says every test cell
        # ran without an error and printed a pass (what the old verdict records and nbgrader's error rule read)
        test_cells = [i for i, c in enumerate(nb["cells"]) if c.get("metadata", {}).get("nbgrader", {}).get("grade")]
        assert test_cells and all(i in room.outputs and i not in room.errors for i in test_cells), (room.outputs, room.errors)
        assert all("\u2713" in room.outputs[i][0]["text"] for i in test_cells)
    else:
        assert any("could not read" in note and "more than the grader reads" in note for note in room.notes), room.notes


def test_a_replay_of_another_grading_s_data_earns_nothing(monkeypatch):
    """The data a correct notebook sent in one grading, replayed by a program in another: it would pay if the
    judge drew the same inputs again (shown with a fixed seed), and it does not, since every grading draws
    fresh ones."""
    answers, genuine = [], judge_stage.Session.handle

    def tap(self, message):
        if message.get("event") == "answer":
            answers.append([message["check"], message["data"]])
        return genuine(self, message)

    solution = read_notebook(notebook_path("ex1_memory", "solution"))
    monkeypatch.setattr(judge_stage.Session, "handle", tap)
    first = _run(solution, context=_fixed_seed(1234))
    monkeypatch.undo()
    assert all(first.passed.values()) and len(answers) == len(CHECKS), first.messages
    replay = _program(read_notebook(notebook_path("ex1_memory", "release")),
                      "replayed data of another student's grading", REPLAY=answers)
    same_inputs = _run(replay, context=_fixed_seed(1234))
    assert all(same_inputs.passed.values()), same_inputs.messages  # the defence absent: the same inputs
    fresh = _run(replay)
    fixed = {"test_bytes_per_param"}  # the five dtypes and an unknown name (any error passes): the data is the answer
    assert not any(ok for grade_id, ok in fresh.passed.items() if grade_id not in fixed), fresh.messages
