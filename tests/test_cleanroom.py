"""The clean room alone (instructor/grading/execute.py), on small notebooks: what it runs, what its process can
and cannot reach, and that only the judge's verdict counts, whatever the process does to itself. The red team
(tests/test_redteam.py) grades whole submissions through it; these show each mechanism by itself, in seconds."""
import os
import pathlib

import nbformat
import pytest

from instructor.course.notebooks import ROOT
from instructor.grading import execute, merge, sandbox
from judges._core import fail, part

# The test cell: a collector that hands over the notebook's `answer`; the judge below wants 42.
CHECK = ("from graders._collect import check\n"
         "def check_answer(ns):\n"
         "    check('selftest', 'answer', ns, lambda ns, request: {'value': ns.get('answer')})\n"
         "check_answer(globals())")


class Judge:
    """The judge of CHECK, in the worker."""

    @staticmethod
    def ask_answer(ctx):
        return {}, None

    @staticmethod
    def judge_answer(data, secret):
        if part(data, "value") != 42:
            fail(f"answer should be 42, got {part(data, 'value')!r}")
        return "answer is 42"


NAMESPACES = sandbox.namespaces_available()


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
                            tests={"test_answer": CHECK}, judges=Judge)


def test_a_passing_and_a_failing_check(tmp_path):
    assert judge(tmp_path, "answer = 42", CHECK).passed == {"test_answer": True}
    failed = judge(tmp_path, "answer = 41", CHECK)
    assert failed.passed == {"test_answer": False} and "got 41" in failed.why["test_answer"]
    graded = merge.graded_notebook(notebook(*["answer = 41", CHECK], test_at=1), failed)
    assert graded.cells[1].outputs[-1]["ename"] == "CheckFailed" and "got 41" in graded.cells[1].outputs[-1]["evalue"]


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


# -- what the notebook's process can reach ------------------------------------------------------------
LOOK = """import os
paths = {name: os.path.join(os.environ["COURSE_ROOT"], name) for name in
         ["judges", "judges/ex1_memory.py", "source", "solution", "tests/answers", ".git", "autograded",
          "graders/_collect.py", "utils/__init__.py", "colab_setup.py"]}
paths["a folder of /tmp"] = os.environ["SCRATCH"]
seen = sorted(name for name, path in paths.items() if os.path.exists(path))
answer = 42"""


@pytest.mark.skipif(not NAMESPACES, reason="the jail needs Linux user namespaces (unshare), which this machine refuses")
def test_the_jail_shows_the_collectors_and_hides_the_judges_and_the_course(tmp_path, monkeypatch):
    scratch = tmp_path / "another-grading"
    scratch.mkdir()
    monkeypatch.setenv("SCRATCH", str(scratch))
    monkeypatch.setenv("COURSE_ROOT", str(ROOT))
    room = judge(tmp_path, LOOK + "\nprint(seen)", CHECK)
    shown = room.outputs[0][0]["text"]
    assert room.passed == {"test_answer": True}, room
    assert shown.strip() == str(sorted(["graders/_collect.py", "utils/__init__.py", "colab_setup.py"])), shown


HOLD = """import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
held = open("/proc/self/status").read().split("CapEff:")[1].split()[0]
tried = {"unmount the course": libc.umount2(os.environ["COURSE_ROOT"].encode(), 2),
         "remount it writable": libc.mount(None, os.environ["COURSE_ROOT"].encode(), None, 32 | 4096, None),
         "a new user namespace": libc.unshare(0x10000000)}
try:
    open("/proc/1/mem", "rb")
    tried["the fork server's memory"] = 0
except OSError:
    tried["the fork server's memory"] = -1
print(held, sorted(what for what, code in tried.items() if code == 0))
answer = 42"""


@pytest.mark.skipif(not NAMESPACES, reason="the jail needs Linux user namespaces (unshare), which this machine refuses")
def test_the_process_holds_no_capability_and_cannot_undo_the_jail(tmp_path, monkeypatch):
    """Root in the jail's user namespace could unmount what hides the judges, remount the course writable or
    read the fork server's memory (and so the next notebook's): the child drops every capability first."""
    monkeypatch.setenv("COURSE_ROOT", str(ROOT))
    room = judge(tmp_path, HOLD, CHECK)
    assert room.armed == {"capabilities": "", "seccomp": ""}, room.armed
    assert room.outputs[0][0]["text"].strip() == "0000000000000000 []", room.outputs


# -- whatever the process does to itself, the verdict is the judge's -----------------------------------
ANYTHING = {
    "an input transformer": "get_ipython().input_transformers_cleanup.append(lambda lines: ['pass\\n'])",
    "frames": "import sys\nframe = sys._getframe()\nframe.f_globals['seen'] = frame.f_back",
    "the garbage collector": "import gc\nobjects = len(gc.get_objects())",
    "a trace function": "import sys\nsys.settrace(lambda *a: None)\nsys.settrace(None)",
    "raw memory": "import ctypes\nraw = ctypes.string_at(id(1), 8)",
    "its own memory file": "raw = open('/proc/self/maps').read()[:10]",
    "a new code object": "code = (lambda: 0).__code__.replace(co_consts=(1,))",
    "a subprocess": "import subprocess\ntry:\n    subprocess.run(['true'])\nexcept OSError:\n    pass",
}


@pytest.mark.parametrize("label", list(ANYTHING))
def test_what_the_process_does_to_itself_changes_no_verdict(tmp_path, label):
    """Once refused or reported, now simply the notebook's own business: a right answer still passes
    (nothing removed, nothing flagged), and a wrong one still fails."""
    right = judge(tmp_path, "answer = 42", ANYTHING[label], CHECK)
    assert right.passed == {"test_answer": True} and not right.removed, right
    wrong = judge(tmp_path, "answer = 41", ANYTHING[label], CHECK)
    assert wrong.passed == {"test_answer": False}, wrong


SABOTAGE = {
    "the collector replaced by a pass": "import graders._collect as c\nc.check = lambda *a, **k: print('\u2713 passed')",
    "an answer sent before its inputs were asked": (
        "import graders._collect as c\n"
        "c._channel.send({'event': 'answer', 'check': 'answer', 'data': {'value': 42}})\n"
        "c._channel.send({'event': 'done', 'cell': 2, 'raised': False, 'outputs': []})"),
}


@pytest.mark.parametrize("label", list(SABOTAGE))
def test_a_process_that_silences_or_preempts_its_check_earns_nothing_for_it(tmp_path, label):
    """What used to fake a pass (a check replaced, a verdict written on the channel) now only keeps the
    judge from the data it needs: the check fails, right answer or not."""
    for answer in ("answer = 42", "answer = 41"):
        room = judge(tmp_path, answer, SABOTAGE[label], CHECK)
        assert room.passed == {"test_answer": False}, room


def test_a_collector_that_lies_about_the_answer_earns_what_its_data_earns(tmp_path):
    """The notebook replaces the collector with one that sends 42 whatever `answer` is: 42 is the answer the
    judge wants, so it passes (forging this data is knowing the answer); a lie that is not the answer fails."""
    forge = ("import graders._collect as c\n"
             "real = c.check\n"
             "c.check = lambda ex, name, ns, collect, **k: real(ex, name, ns, lambda ns, r: {'value': {v}})")
    assert judge(tmp_path, "answer = 41", forge.replace("{v}", "42"), CHECK).passed == {"test_answer": True}
    assert judge(tmp_path, "answer = 41", forge.replace("{v}", "'passed'"), CHECK).passed == {"test_answer": False}


@pytest.mark.parametrize("label, sent, said", [
    ("garbage", "c._channel.sock.sendall(b'this is not json\\n')", "could not read"),
    ("a claim of passing", "c._channel.send({'event': 'answer', 'check': 'answer', 'data': {'passed': True}})",
     "could not read"),
    ("too much", "c._channel.sock.sendall(b'x' * (70 * 2**20))", "more than the grader reads"),
])
def test_a_channel_that_says_garbage_or_too_much_earns_nothing_with_a_note(tmp_path, label, sent, said):
    """The check waiting for its data when garbage arrives fails; the note says what happened."""
    collector = "lambda ns, request: (" + sent.replace("c._channel", "__import__('graders._collect').__dict__['_collect']._channel") + ", {'value': 42})[1]"
    test = CHECK.replace("lambda ns, request: {'value': ns.get('answer')}", collector)
    nb = notebook("answer = 42", test, test_at=1)
    settings = sandbox.Limits(cell_timeout=30, notebook_timeout=120, memory_mb=3000)
    room = execute.verdicts(nb, "ex1_memory", pathlib.Path(tmp_path), {**os.environ, "PYTHONPATH": sandbox.pythonpath()},
                            settings, "namespaces" if NAMESPACES else "process", tests={"test_answer": test},
                            judges=Judge)
    assert room.passed == {"test_answer": False}, room
    assert said in room.messages["test_answer"] or any(said in note for note in room.notes), (room.messages, room.notes)


@pytest.mark.parametrize("label, source, reason, seconds", [
    ("exits", "import os\nos._exit(0)", "stopped the Python process", 5),
    ("hangs", "while True:\n    pass", "ran past the 5 s limit", 5),
    # page faults on a loaded 2-core machine: room to reach the memory limit before the time limit
    ("eats memory", "hog = []\nwhile True:\n    hog.append(bytearray(50_000_000))", "MB of memory", 60),
])
def test_a_cell_that_stops_the_clean_room_is_removed_and_the_rest_graded(tmp_path, label, source, reason, seconds):
    verdict = judge(tmp_path, "answer = 42", source, CHECK, cell_timeout=seconds, memory_mb=1500)
    assert verdict.passed == {"test_answer": True} and reason in verdict.removed[1][1], verdict


def test_a_test_cell_that_stops_loses_its_check_and_says_why(tmp_path):
    """The answer hangs when the collector calls it: that check earns nothing, the rest is graded."""
    hang = "class Answer:\n    def __eq__(self, other):\n        while True:\n            pass\nanswer = 42"
    slow_check = CHECK.replace("ns.get('answer')", "ns.get('answer') if ns.get('answer') != -1 else 0")
    nb = notebook(hang.replace("answer = 42", "answer = Answer()"), slow_check, test_at=1)
    settings = sandbox.Limits(cell_timeout=5, notebook_timeout=120, memory_mb=3000)
    room = execute.verdicts(nb, "ex1_memory", pathlib.Path(tmp_path), {**os.environ, "PYTHONPATH": sandbox.pythonpath()},
                            settings, "namespaces" if NAMESPACES else "process", tests={"test_answer": slow_check},
                            judges=Judge)
    assert room.passed == {"test_answer": False} and "ran past the 5 s limit" in room.messages["test_answer"], room
    assert not room.removed


def test_without_namespaces_the_worker_is_out_of_a_cell_s_reach(tmp_path):
    """Process isolation: the clean room's parent is a stand-in, not the grading worker, so a cell that
    kills its parent kills only that; the cell is removed and the rest graded."""
    kill = "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nimport time\ntime.sleep(5)"
    verdict = judge(tmp_path, "answer = 42", kill, CHECK, isolation="process")
    assert verdict.passed == {"test_answer": True} and list(verdict.removed) == [1], verdict


# -- found by attacking the clean room: what one notebook leaves must not reach the next -------------------
PLANT = """import os, pathlib
room = pathlib.Path(os.getcwd()).parent          # the job folder; its parent is the fork server's own
tried = {}
for what, act in [("write beside the job folder", lambda: (room.parent / "planted.py").write_text("x = 1")),
                  ("replace the job folder by a link", lambda: (room.rename(room.parent / ".evil"),
                                                                 os.symlink(room.parent / ".evil", room))),
                  ("leave a file in it", lambda: (room / "tmp" / "left-behind").write_text("for the next one"))]:
    try:
        act()
        tried[what] = "done"
    except OSError as error:
        tried[what] = error.strerror
print(sorted(tried.items()))
answer = 42"""
NEXT = """import os, pathlib
room = pathlib.Path(os.getcwd()).parent
print(sorted(p.name for p in room.parent.iterdir() if p.name not in ("job",)), sorted(os.listdir(room / "tmp")))
answer = 42"""


@pytest.mark.skipif(not NAMESPACES, reason="the jail needs Linux user namespaces (unshare), which this machine refuses")
def test_a_notebook_can_write_only_in_its_own_job_folder_and_nothing_it_leaves_reaches_the_next(tmp_path):
    """Once, the fork server's whole folder was writable: a notebook replaced its job folder by a link, so the worker
    could not empty it, and planted bytecode that the next notebook on that server ran (it read the victim's
    cells and silenced its checks). Now only the job folder is writable, a mount point that cannot be replaced,
    and the worker empties it after every notebook."""
    first = judge(tmp_path, PLANT, CHECK)
    said = first.outputs[0][0]["text"]
    assert "('write beside the job folder', 'Read-only file system')" in said, said
    assert "('replace the job folder by a link', 'Device or resource busy')" in said or \
        "('replace the job folder by a link', 'Read-only file system')" in said, said
    assert "('leave a file in it', 'done')" in said, said
    second = judge(tmp_path, NEXT, CHECK)  # the same fork server (the pool keeps it)
    assert second.passed == {"test_answer": True}, second
    assert second.outputs[0][0]["text"].strip() == "[] []", second.outputs


def test_what_utf_8_cannot_hold_is_replaced_not_fatal(tmp_path):
    """A lone surrogate printed by a cell (or in a cell's source) once made writing the graded notebook fail,
    and with it the recording of a whole class."""
    import nbformat
    room = judge(tmp_path, "print('\\ud800 half a character')\nanswer = 42", CHECK)
    graded = merge.graded_notebook(notebook("print('\\ud800')\nanswer = 42", CHECK, test_at=1), room)
    text = nbformat.writes(graded)
    (tmp_path / "graded.ipynb").write_text(text, encoding="utf-8")
    assert room.passed == {"test_answer": True} and "? half a character" in text
