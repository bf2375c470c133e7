"""The clean room alone (instructor/grading/execute.py), on small notebooks: what it runs, what it refuses,
and that only its own signed records count. The red team (tests/test_redteam.py) grades whole
submissions through it; these show each mechanism by itself, in seconds."""
import os
import pathlib

import nbformat
import pytest

from instructor.course.notebooks import ROOT
from instructor.grading import execute, merge, sandbox

CHECK = "assert answer == 42, f'answer should be 42, got {answer}'"


def notebook(*sources, test_at=None):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    if test_at is not None:
        nb.cells[test_at].metadata["nbgrader"] = {"grade": True, "grade_id": "test_answer", "points": 1}
    return nb


def judge(tmp_path, *sources, test_at=-1, isolation=None, assignment="ex1_memory", **limits):
    """Run `sources` (the cell at test_at is the test cell: CHECK) in the clean room, as a notebook of
    `assignment`; its Verdicts."""
    sources = list(sources)
    test_at = test_at % len(sources)
    nb = notebook(*sources, test_at=test_at)
    settings = sandbox.Limits(**{"cell_timeout": 20, "notebook_timeout": 120, "memory_mb": 3000, **limits})
    isolation = isolation or ("namespaces" if sandbox.namespaces_available() else "process")
    env = {**os.environ, "PYTHONPATH": sandbox.pythonpath()}
    return execute.verdicts(nb, assignment, pathlib.Path(tmp_path), env, settings, isolation,
                              tests={"test_answer": CHECK})


def test_a_passing_and_a_failing_check(tmp_path):
    assert judge(tmp_path, "answer = 42", CHECK).passed == {"test_answer": True}
    failed = judge(tmp_path, "answer = 41", CHECK)
    assert failed.passed == {"test_answer": False} and "got 41" in failed.why["test_answer"]


def test_cells_after_the_last_graded_one_are_not_run_unless_asked(tmp_path):
    """They cannot change a score (Exercise 4's training run is one): skipped, and the feedback says so."""
    sources = ("answer = 42", CHECK, "print('trailing'); raise SystemExit")
    room = judge(tmp_path, *sources, test_at=1)
    assert room.passed == {"test_answer": True} and 2 not in room.outputs and room.last_run_cell == 1
    graded = merge.graded_notebook(notebook(*sources, test_at=1), room)
    assert graded.cells[2].outputs[0]["text"] == merge.NOT_RUN and graded.cells[2].execution_count is None
    ran = judge(tmp_path, *sources, test_at=1, trailing_cells=True)
    assert ran.passed == {"test_answer": True} and "trailing" in str(ran.outputs[2])


def test_a_server_imports_an_exercise_s_libraries_before_its_first_notebook(tmp_path, monkeypatch):
    """The list is the instructor's notebook's (course_imports): Exercise 1 names neither bitsandbytes nor PEFT,
    so its server never imports them; Exercise 5 names both, so the same server imports them once and its
    children inherit them (where that import initializes CUDA, the pool leaves it to each child instead).
    The graded notebooks import nothing themselves: what their cell sees is what the child inherited."""
    heavy = {"bitsandbytes", "peft"}
    assert heavy <= set(execute.course_imports("ex5_quantized_inference"))
    assert not heavy & set(execute.course_imports("ex1_memory"))
    monkeypatch.setattr(execute, "POOL", execute._Pool())  # fresh servers: none has graded Exercise 5 yet
    neither = f"import sys\nanswer = 42 if not {heavy!r} & set(sys.modules) else 0"
    both = f"import sys\nanswer = 42 if {heavy!r} <= set(sys.modules) else 0"
    try:
        ex1 = judge(tmp_path, neither, CHECK)
        ex5 = judge(tmp_path, both, CHECK, assignment="ex5_quantized_inference")
        cold = bool(execute.POOL.cold)
        again = judge(tmp_path, both, CHECK)  # Exercise 1 again, on the same server: it keeps what it imported
    finally:
        execute.POOL.close()
    assert ex1.passed == {"test_answer": True}, ex1.why
    assert ex5.passed == {"test_answer": not cold}, ex5.why
    assert again.passed == {"test_answer": not cold}, again.why


def test_the_test_cell_is_the_course_s_not_the_submission_s(tmp_path):
    """A submission that edits its test cell to `pass` is still checked with the course's words."""
    assert judge(tmp_path, "answer = 41", "pass").passed == {"test_answer": False}


def test_ipython_magics_and_shell_commands_run_or_are_skipped(tmp_path):
    verdict = judge(tmp_path, "%matplotlib inline\n!echo hi\nfiles = !ls", "%%time\nanswer = 6 * 7",
                    "%time answer = answer + 0", CHECK)
    assert verdict.passed == {"test_answer": True} and verdict.errors == {}, verdict


@pytest.mark.parametrize("label, source, reason", [
    ("an input transformer", "get_ipython().input_transformers_cleanup.append(lambda lines: ['pass\\n'])",
     "input_transformers_cleanup"),
    ("a frame", "import sys\nsys._getframe()", "sys._getframe"),
    ("a traceback's frame", "try:\n    1 / 0\nexcept ZeroDivisionError as e:\n    e.__traceback__.tb_frame",
     "tb_frame"),
    ("the garbage collector", "import gc\ngc.get_objects()", "gc.get_objects"),
    ("a trace function", "import sys\nsys.settrace(lambda *a: None)", "sys.settrace"),
    ("ctypes", "import ctypes\nctypes.string_at(id(1), 8)", "ctypes"),
    ("a new code object", "(lambda: 0).__code__.replace(co_consts=(1,))", "code.__new__"),
    ("a process", "import subprocess\nsubprocess.run(['true'])", "subprocess.Popen"),
    ("its memory", "open('/proc/self/mem', 'rb')", "/proc/self/mem"),
    ("its memory, by another path", "import os\nos.open('self/mem', os.O_RDONLY, dir_fd=os.open('/proc', os.O_RDONLY))",
     "self/mem"),
    ("a link to its memory", "import os\nos.symlink('/proc/self/mem', 'innocent')", "os.symlink"),
    ("a grader replaced", "import graders._core\ngraders._core.fail = print", "graders._core.fail"),
    ("the grader's source", "open(__import__('graders').__path__[0] + '/ex1_memory.py')",
     "ex1_memory.py"),
])
def test_what_could_reach_the_verdict_is_refused_and_the_cell_removed(tmp_path, label, source, reason):
    verdict = judge(tmp_path, "answer = 42", source, CHECK)
    assert verdict.passed == {"test_answer": True}, verdict  # graded without the cell
    assert list(verdict.removed) == [1] and reason in verdict.removed[1][1], verdict.removed


def test_writing_into_the_graders_is_refused_without_namespaces_too(tmp_path):
    """The hook, not only the read-only mount, keeps a cell from planting a module among the graders."""
    target = pathlib.Path(ROOT) / "graders" / "planted.py"
    room = judge(tmp_path, f"open({str(target)!r}, 'w').write('x = 1')", "answer = 42", CHECK, isolation="process")
    assert room.passed == {"test_answer": True} and not target.exists()
    assert "opening" in room.removed[0][1], room.removed


def test_no_signal_handler_can_be_installed(tmp_path):
    """A signal handler would be handed the running frame: seccomp refuses to install one."""
    verdict = judge(tmp_path, "import signal\nsignal.signal(signal.SIGUSR1, lambda *a: None)\nanswer = 42", CHECK)
    if verdict.seccomp:
        pytest.skip(f"no seccomp filter on this machine: {verdict.seccomp}")
    assert verdict.passed == {"test_answer": False} and "Operation not permitted" in verdict.errors[0]


def test_forged_records_are_caught_and_their_cell_removed(tmp_path):
    forge = ("import os, json\nfor fd in range(3, 40):\n    try:\n        os.write(fd, ('0' * 64 + ' ' + json.dumps("
             "{'event': 'done', 'cell': 2, 'grade_id': 'test_answer', 'error': None, 'tampered': [], 'refused': [],"
             " 'seq': 3}) + '\\n').encode())\n    except OSError:\n        pass")
    verdict = judge(tmp_path, "answer = 41", forge, CHECK)
    assert verdict.passed == {"test_answer": False}
    assert "verdict channel" in verdict.removed[1][1] and verdict.flags


@pytest.mark.parametrize("label, source, reason", [
    ("exits", "import os\nos._exit(0)", "stopped the Python process"),
    ("hangs", "while True:\n    pass", "ran past the 5 s limit"),
    ("eats memory", "hog = []\nwhile True:\n    hog.append(bytearray(50_000_000))", "MB of memory"),
])
def test_a_cell_that_stops_the_clean_room_is_removed_and_the_rest_graded(tmp_path, label, source, reason):
    verdict = judge(tmp_path, "answer = 42", source, CHECK, cell_timeout=5, memory_mb=1500)
    assert verdict.passed == {"test_answer": True} and reason in verdict.removed[1][1], verdict


def test_without_namespaces_the_worker_is_out_of_a_cell_s_reach(tmp_path):
    """Process isolation: the clean room's parent is a stand-in, not the grading worker, so a cell that
    kills its parent kills only that; the cell is removed and the rest graded."""
    kill = "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nimport time\ntime.sleep(5)"
    verdict = judge(tmp_path, "answer = 42", kill, CHECK, isolation="process")
    assert verdict.passed == {"test_answer": True} and list(verdict.removed) == [1], verdict


# Found by attacking the clean room (each once made a wrong answer pass, unflagged); kept as regressions.
NAMELESS_ERROR = """class _Nameless(Exception):
    def __str__(self):
        raise _Nameless()
_Nameless.__name__ = ""
class _Key:
    armed = False
    def __hash__(self):
        return hash("answer")
    def __eq__(self, other):
        if _Key.armed and other == "answer":
            raise _Nameless()
        return False
globals()[_Key()] = 0
_Key.armed = True"""
SIGNS_AS_MAIN = """import sys, builtins, functools, itertools
class _K:
    def __hash__(self):
        return hash("__builtins__")
    def __eq__(self, other):
        return False
g = globals()
del g["__builtins__"]
g[_K()] = builtins
g["__builtins__"] = builtins
_K.__eq__ = functools.partial(next, itertools.starmap(sys.audit, [
    ("course.cleanroom", "done", 2, "test_answer", False, None, 0.0), ("course.cleanroom", "end")]))"""
HOOK_FRAME = """import sys, traceback
class _Out(BaseException):
    pass
class _Path(str):
    def __getitem__(self, i):
        raise _Out()
try:
    open(_Path("x"))
except (_Out, OSError) as error:
    frames = [frame for frame, _ in traceback.walk_tb(error.__traceback__)]
hook = next(frame for frame in frames if frame.f_code.co_name == "hook")
hook.f_locals["state"]["main"] = frames[0]
sys.audit("course.cleanroom", "done", 1, None, False, None, 0.0)
sys.audit("course.cleanroom", "start", 2)
sys.audit("course.cleanroom", "done", 2, "test_answer", False, None, 0.0)
sys.audit("course.cleanroom", "end")"""
REFUSAL_FRAME = """import sys, traceback
try:
    sys._getframe()
except ValueError as error:
    frames = [frame for frame, _ in traceback.walk_tb(error.__traceback__)]
frames[1].f_locals["state"]["main"] = frames[0]
sys.audit("course.cleanroom", "done", 1, "test_answer", False, None, 0.0)
sys.audit("course.cleanroom", "end")"""


@pytest.mark.parametrize("label, source", [("an exception with an empty name", NAMELESS_ERROR),
                                           ("a C callable run by main's own code", SIGNS_AS_MAIN),
                                           ("the hook's frame, reached by running code inside it", HOOK_FRAME),
                                           ("the hook's frame, through a refusal's traceback", REFUSAL_FRAME)])
def test_what_once_forged_a_pass_no_longer_does(tmp_path, label, source):
    verdict = judge(tmp_path, "answer = 41", source, CHECK)
    assert verdict.passed == {"test_answer": False}, verdict


def test_an_answer_that_interferes_while_it_is_checked_fails(tmp_path):
    source = "class Answer(int):\n    def __eq__(self, other):\n        import math\n        math.isclose = None\n" \
             "        return True\nanswer = Answer(41)"
    verdict = judge(tmp_path, source, CHECK)
    assert verdict.passed == {"test_answer": False} and "interfered" in verdict.why["test_answer"], verdict
