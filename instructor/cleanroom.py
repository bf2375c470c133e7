"""The verdict: every test cell of a submission, run again where the notebook's code has no say over it.

After the notebook has run in its Jupyter kernel (the run students see in feedback), the worker starts
instructor/cleanroom_runner.py in a jail of its own and gives it the notebook's cells, the test cells
as the course wrote them, and a fresh key. It reads back one signed record per cell and checks every
signature and sequence number here, outside the jail, where nothing the notebook runs can reach. A test
cell counts as passed only if its clean-room record says so; the kernel's run can only lower a grade.

As in the kernel, a cell that tampers (replaces what grading relies on, registers an IPython hook,
asks for a frame or ctypes...), hangs, exhausts memory or kills the process is removed and the clean
room started again without it, so the rest is still graded; a check whose own run is tampered with
fails. Each reason is reported.
"""
import dataclasses
import hashlib
import hmac
import json
import os
import pathlib
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time

from instructor.guarded_execute import _kill_tree, _tree_memory, describe_cell, imported_modules, limit_breach
from instructor.notebooks import ROOT, notebook_path, read_notebook

PRELOAD = ["torch", "numpy", "matplotlib.pyplot", "IPython.display", "tqdm.auto", "utils", "colab_setup"]
RUNNER = ("import sys; sys.path.insert(0, {root!r}); "
          "from instructor.cleanroom_runner import main; main()")
# A small parent of its own stands between the clean room and whatever started it: without namespaces
# that would be the grading worker, which a cell could signal (os.kill(os.getppid(), ...)); with them,
# the clean room would be the PID namespace's init, which ignores the signals a cell sends itself.
PARENT = ("import os, sys\npid = os.fork()\nif pid == 0:\n    os.execv(sys.executable, [sys.executable, *sys.argv[1:]])\n"
          "sys.exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))")
MAX_ATTEMPTS = 6
MAX_PROCESSES = 32
MAX_RECORD_BYTES = 4 * 2**20  # what is read back from the verdict pipe


@dataclasses.dataclass
class Verdicts:
    passed: dict = dataclasses.field(default_factory=dict)  # grade_id -> bool
    why: dict = dataclasses.field(default_factory=dict)  # grade_id -> why it failed
    removed: dict = dataclasses.field(default_factory=dict)  # cell index -> (cell, reason)
    errors: dict = dataclasses.field(default_factory=dict)  # cell index -> the error it ended with (last run)
    flags: list = dataclasses.field(default_factory=list)
    broken: str = None  # the clean room could not run at all (the grader's problem, not the student's)
    attempts: int = 0
    seconds: float = 0.0
    seccomp: str = ""


def test_cells(assignment: str) -> dict:
    """grade_id -> source of every autograded test cell, from the course's own source notebook."""
    out = {}
    for cell in read_notebook(notebook_path(assignment))["cells"]:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("grade") and cell["cell_type"] == "code":
            out[meta["grade_id"]] = "".join(cell["source"])
    return out


class _Reader(threading.Thread):
    """Reads the verdict pipe, checks each record's signature and number, and keeps the good ones."""

    def __init__(self, fd: int, key: bytes):
        super().__init__(daemon=True)
        self.fd, self.key = fd, key
        self.records, self.forged, self.running, self.started_at = [], 0, None, None
        self.last, self.forged_in = None, []  # the cell that started last; the cells running when forgeries came

    def run(self):
        buffer, total = b"", 0
        with os.fdopen(self.fd, "rb", buffering=0) as pipe:
            while True:
                chunk = pipe.read(65536)
                if not chunk:
                    break
                total += len(chunk)
                if total > MAX_RECORD_BYTES:
                    self._forgery()  # only a notebook writes this much here
                    continue
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    self._take(line)

    def _take(self, line: bytes):
        mac, _, body = line.partition(b" ")
        expected = hmac.new(self.key, body, hashlib.sha256).hexdigest().encode()
        try:
            record = json.loads(body) if hmac.compare_digest(mac, expected) else None
        except ValueError:
            record = None
        if not isinstance(record, dict) or record.get("seq") != len(self.records):
            self._forgery()
            return
        self.records.append(record)
        if record.get("event") == "start":
            self.running, self.last, self.started_at = record["cell"], record["cell"], time.monotonic()
        elif record.get("event") == "done":
            self.running = None

    def _forgery(self):
        self.forged += 1
        if self.last is not None and self.last not in self.forged_in:
            self.forged_in.append(self.last)


def _job_cells(nb, tests: dict, skip: dict) -> list:
    """The cells the clean room runs: the notebook's code cells, each test cell in the course's words."""
    cells = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        is_test = grade_id in tests
        source = tests[grade_id] if is_test else cell.source
        if index in skip:
            source = f"raise RuntimeError({('autograder: ' + skip[index])!r})"
        cells.append({"index": index, "grade_id": grade_id if is_test else None, "test": is_test, "source": source})
    return cells


def _command(sandbox: pathlib.Path, fd: int, isolation: str) -> list:
    from instructor.sandbox import UNSHARE
    command = [sys.executable, "-I", "-c", PARENT, "-I", "-c", RUNNER.format(root=str(ROOT)), str(fd)]
    if isolation == "namespaces":  # the stand-in parent is the namespace's PID 1: the clean room is never it
        return [*UNSHARE, sys.executable, "-m", "instructor.jail", str(sandbox), "--", *command]
    return command


def _one_run(nb, tests, skip, sandbox, env, limits, isolation, attempt) -> tuple:
    """Run the clean room once: (records, cells running when forged records came, why it was stopped or
    None, the cell running then)."""
    room = sandbox / "cleanroom" / str(attempt)
    for name in ("home/.ipython", "home/.cache", "tmp", "work", "pycache"):
        (room / name).mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    job = {"key": key.hex(), "cwd": str(room / "work"), "pycache": str(room / "pycache"),
           "path": [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p],
           "preload": PRELOAD + imported_modules(nb), "cells": _job_cells(nb, tests, skip)}
    home = room / "home"
    env = {**env, "HOME": str(home), "TMPDIR": str(room / "tmp"), "IPYTHONDIR": str(home / ".ipython"),
           "MPLCONFIGDIR": str(home / ".matplotlib"), "XDG_CACHE_HOME": str(home / ".cache"),
           "MPLBACKEND": "Agg", "PYTHONDONTWRITEBYTECODE": "1"}
    read_fd, write_fd = os.pipe()
    try:
        process = subprocess.Popen(_command(sandbox, write_fd, isolation), cwd=room, env=env, stdin=subprocess.PIPE,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, pass_fds=(write_fd,),
                                   start_new_session=True)
    finally:
        os.close(write_fd)
    reader = _Reader(read_fd, key)
    reader.start()
    try:
        process.stdin.write(json.dumps(job).encode())
        process.stdin.close()
    except OSError:
        pass
    stopped = _watch(process, reader, limits)
    try:  # whatever the notebook left behind in the clean room's process group (an orphan, a fork) goes too
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    reader.join(timeout=30)
    return reader.records, reader.forged_in if reader.forged else [], stopped, reader.running


def _watch(process, reader, limits):
    """Wait for the clean room; stop it past a limit. Returns why it was stopped, or None."""
    import psutil
    deadline = time.monotonic() + limits.notebook_timeout
    try:
        root = psutil.Process(process.pid)
    except psutil.NoSuchProcess:
        root = None
    while process.poll() is None:
        why = None
        if time.monotonic() > deadline:
            why = f"ran past the {limits.notebook_timeout} s given to the whole notebook"
        elif reader.running is not None and time.monotonic() - reader.started_at > limits.cell_timeout:
            why = f"ran past the {limits.cell_timeout} s limit"
        elif root is not None:
            try:
                procs = [root, *root.children(recursive=True)]  # unshare and the stand-in parent among them
                why = limit_breach(procs, _tree_memory(procs), MAX_PROCESSES, limits.memory_mb, overhead=3)
            except psutil.Error:
                pass
        if why:
            if root is not None:
                _kill_tree(root)
            process.kill()
            process.wait()
            return why
        time.sleep(0.05)
    return None


def verdicts(nb, assignment: str, sandbox: pathlib.Path, env: dict, limits, isolation: str,
             skip: dict = None, tests: dict = None) -> Verdicts:
    """Run every test cell of `nb` (the notebook as the kernel graded it) in the clean room. `tests`
    (grade_id -> source) replaces the course's own test cells, for tests of the clean room itself."""
    started, tests = time.perf_counter(), tests if tests is not None else test_cells(assignment)
    skip, failed_tests, result = dict(skip or {}), {}, Verdicts()
    try:
        for attempt in range(MAX_ATTEMPTS):
            result.attempts = attempt + 1
            records, forged, stopped, running = _one_run(nb, tests, {**skip, **failed_tests}, sandbox, env, limits,
                                                         isolation, attempt)
            by_event = {}
            for record in records:
                by_event.setdefault(record["event"], []).append(record)
            if "broken" in by_event:
                result.broken = by_event["broken"][0].get("error", "unknown")
                return result
            if "ready" not in by_event:
                result.broken = stopped or "the clean room stopped before it was ready"
                return result
            result.seccomp = by_event["ready"][0].get("seccomp", "")
            done = by_event.get("done", [])
            result.errors = {record["cell"]: record.get("error") or "an error" for record in done if record.get("raised")}
            for record in done:
                if record.get("grade_id"):
                    ok = record.get("raised") is False and not record.get("tampered") and not record.get("refused")
                    result.passed[record["grade_id"]] = ok
                    if not ok:
                        result.why[record["grade_id"]] = _reason(record) or record.get("error")
            if forged:
                result.flags.append("forged records on the clean room's verdict channel")
            culprit, why = _culprit(done, forged, stopped, running, by_event)
            if culprit is None:
                return result
            cell = nb.cells[culprit]
            grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
            if grade_id in tests:  # the check itself was interfered with (by the answer it called, say)
                failed_tests[culprit] = f"the check was interfered with while it ran: it {why}"
                result.passed[grade_id], result.why[grade_id] = False, failed_tests[culprit]
            else:
                skip[culprit] = f"this cell {why}"
                result.removed[culprit] = (describe_cell(cell, culprit), why)
        result.broken = f"still interfered with after {MAX_ATTEMPTS} runs"
        return result
    finally:
        result.seconds = round(time.perf_counter() - started, 2)
        for grade_id in tests:
            if grade_id not in result.passed:
                result.passed[grade_id] = False
                result.why.setdefault(grade_id, "the clean room never reached this check")
        if not os.environ.get("COURSE_KEEP_CLEANROOM"):
            shutil.rmtree(sandbox / "cleanroom", ignore_errors=True)


def _reason(record) -> str:
    parts = []
    if record.get("refused"):
        parts.append("used what grading does not allow: " + ", ".join(record["refused"][:3]))
    if record.get("tampered"):
        names = ", ".join(f"`{n}`" for n in record["tampered"][:4]) + (" and more" if len(record["tampered"]) > 4 else "")
        parts.append(f"replaced or hooked {names}, which grading relies on")
    return "; ".join(parts)


def _culprit(done, forged, stopped, running, by_event):
    """(cell index, reason) of what must go before the next run, or (None, None) when the run was clean."""
    for record in done:
        why = _reason(record)
        if why:
            return record["cell"], why
    if forged:
        return forged[0], "wrote on the autograder's verdict channel"
    if "end" in by_event:
        return None, None
    if running is not None:
        return running, stopped or "stopped the Python process (it exited or crashed)"
    return None, None
