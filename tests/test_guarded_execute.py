"""The hardened Execute step on small notebooks, one failure at a time (no course notebook, so fast).

Each bad cell must be stopped, named with its reason, and the notebook graded without it: the cell
after it still runs and sees the state built before it."""
import json
import subprocess
import sys
import time

import nbformat
import psutil
import pytest

from instructor.grading.kernel import GuardedExecute, _kill_tree, imported_modules, process_tree

# Mostly waiting on kernels (start, interrupt, shutdown): one unit of work, which xdist hands out early (the
# biggest units first), so the waits overlap the CPU-heavy groups instead of ending the run on idle cores.
pytestmark = pytest.mark.xdist_group("guarded-execute")

BEFORE, AFTER = "x = 41", "print('after', x + 1)"


def run(bad_source, report_path, before=BEFORE, **limits):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(before), nbformat.v4.new_code_cell(bad_source),
                nbformat.v4.new_code_cell(AFTER)]
    settings = dict(timeout=10, memory_limit_mb=1500, report_path=str(report_path))
    executor = GuardedExecute(**{**settings, **limits})
    out, _ = executor.preprocess(nb, {"metadata": {"path": str(report_path.parent)}})
    return out, json.loads(report_path.read_text())


def texts(cell) -> str:
    return "".join(o.get("text", "") + o.get("evalue", "") for o in cell.outputs)


@pytest.mark.parametrize("label, source, reason", [
    ("os._exit", "import os\nos._exit(3)", "stopped the Python kernel"),
    ("SIGKILL to itself", "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)", "stopped the Python kernel"),
    ("exit()", "exit()", "asked the kernel to exit"),
    ("memory", "hog = []\nwhile True:\n    hog.append(bytearray(50_000_000))", "used more than 1,500 MB"),
    ("fork bomb", "import os, time\nfor _ in range(100):\n    if os.fork() == 0:\n        time.sleep(30)\n"
                  "        os._exit(0)", "started more than 32 processes"),
    ("ignores interrupts", "import time\nwhile True:\n    try:\n        time.sleep(0.01)\n"
                           "    except KeyboardInterrupt:\n        pass", "did not stop when interrupted"),
])
def test_a_cell_that_breaks_the_kernel_is_removed_and_the_rest_graded(tmp_path, label, source, reason):
    out, report = run(source, tmp_path / "report.json", timeout=5)
    assert list(report["removed"]) == ["1"] and reason in report["removed"]["1"]["reason"], report
    assert "autograder: this cell" in texts(out.cells[1])
    assert texts(out.cells[2]) == "after 42\n", "the cell after it must run, with the state from before it"


def test_an_interruptible_loop_times_out_in_place(tmp_path):
    out, report = run("while True:\n    pass", tmp_path / "report.json", timeout=3)
    assert report["timed_out"] == [1] and not report["removed"]
    assert "ran longer than 3 s" in texts(out.cells[1]) and texts(out.cells[2]) == "after 42\n"


def test_sys_exit_is_an_error_in_its_own_cell_only(tmp_path):
    out, report = run("import sys\nsys.exit('bye')", tmp_path / "report.json")
    assert not report["removed"] and "SystemExit" in [o.get("ename") for o in out.cells[1].outputs]
    assert texts(out.cells[2]) == "after 42\n"


def test_output_is_capped_per_cell(tmp_path):
    out, report = run("for i in range(200_000):\n    print('x' * 50, i)", tmp_path / "report.json",
                      max_output_bytes=100_000)
    kept = sum(len(o.get("text", "")) for o in out.cells[1].outputs)
    assert report["truncated"] == [1] and 100_000 <= kept < 120_000
    assert "output truncated" in texts(out.cells[1]) and texts(out.cells[2]) == "after 42\n"


def test_the_notebook_has_a_total_time_budget(tmp_path):
    out, report = run("import time\ntime.sleep(6)", tmp_path / "report.json", timeout=60, notebook_timeout=3)
    assert report["timed_out"] == [1] and report["not_run"] == [2]
    assert "used up its 3 s of grading time" in texts(out.cells[2])


def test_imports_are_found_even_next_to_magics():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("!pip list\nimport torch, numpy as np\nfrom peft import LoraConfig\n"
                                          "def f(:\n  import matplotlib.pyplot")]
    assert imported_modules(nb) == ["matplotlib.pyplot", "numpy", "peft", "torch"]


def test_process_tree_finds_what_psutil_finds():
    """The watchdogs' cheap listing of a process tree: children of the main thread and of another thread,
    grandchildren, and nothing once the tree is gone."""
    code = ("import subprocess, threading, time\n"
            "subprocess.Popen(['sh', '-c', 'sleep 60 & wait'])\n"
            "threading.Thread(target=lambda: subprocess.Popen(['sleep', '60'])).start()\n"
            "time.sleep(60)\n")
    root = psutil.Process(subprocess.Popen([sys.executable, "-c", code]).pid)
    deadline = time.monotonic() + 10
    while len(root.children(recursive=True)) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    expected = {p.pid for p in root.children(recursive=True)}
    assert len(expected) == 3 and {p.pid for p in process_tree(root)} == expected
    _kill_tree(root)
    root.wait(10)
    assert process_tree(root) == []
