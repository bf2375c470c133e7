"""The verdict: every test cell of a submission, run again where the notebook's code has no say over it.

After the notebook has run in its Jupyter kernel (the run students see in feedback), the worker starts
instructor/grading/cleanroom.py in a jail of its own and gives it the notebook's cells, the test cells
as the course wrote them, and a fresh key. It reads back one signed record per cell and checks every
signature and sequence number here, outside the jail, where nothing the notebook runs can reach. A test
cell counts as passed only if its clean-room record says so; the kernel's run can only lower a grade.

As in the kernel, a cell that tampers (replaces what grading relies on, registers an IPython hook,
asks for a frame or ctypes...), hangs, exhausts memory or kills the process is removed and the clean
room started again without it, so the rest is still graded; a check whose own run is tampered with
fails. Each reason is reported.
"""
import atexit
import contextlib
import dataclasses
import functools
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
import tempfile
import threading
import time

from instructor.grading.kernel import (_kill_tree, _tree_memory, describe_cell, imported_modules, limit_breach,
                                      process_tree)
from instructor.grading.sandbox import UNSHARE, own_folders
from instructor.course.notebooks import ROOT, notebook_path, read_notebook

# What every fork server imports at its start (with every grader, and through them transformers' GPT-2); each
# assignment's other libraries come with its first job (course_imports): bitsandbytes and PEFT cost seconds.
PRELOAD = ["torch", "numpy", "matplotlib.pyplot", "IPython.display", "tqdm.auto", "utils", "colab_setup"]
SERVER = ("import sys; sys.path.insert(0, {root!r}); "
          "from instructor.grading.cleanroom import serve; serve(int(sys.argv[1]))")
# Set per notebook by the fork server's child; everything else of the environment is the server's.
PER_JOB = tuple(own_folders(pathlib.Path("/")))  # each job sets its own
VOLATILE = ("PYTEST_",)  # changes under a worker that stays the same (pytest names the running test)


def server_environment(env: dict) -> dict:
    return {k: v for k, v in env.items() if k not in PER_JOB and not k.startswith(VOLATILE)}
MAX_ATTEMPTS = 6
MAX_PROCESSES = 32
MAX_RECORD_BYTES = 4 * 2**20  # what is read back from the verdict pipe, beyond the cells' own outputs


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
    outputs: dict = dataclasses.field(default_factory=dict)  # cell index -> nbformat outputs (last run)
    cell_seconds: dict = dataclasses.field(default_factory=dict)  # cell index -> seconds it ran (last run)
    stopped: dict = dataclasses.field(default_factory=dict)  # cell index -> why it was stopped (last run)
    peak_memory_mb: float = 0.0
    last_run_cell: int = 10**9  # cells after this index were not run (see last_graded_cell)


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

    def __init__(self, fd: int, key: bytes, limit: int = MAX_RECORD_BYTES):
        super().__init__(daemon=True)
        self.fd, self.key, self.limit = fd, key, limit
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
                if total > self.limit:
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


def last_graded_cell(nb) -> int:
    """Index of the notebook's last cell that carries points (autograded or manually graded), -1 if none."""
    from nbgrader.utils import is_grade, is_task
    return max((i for i, c in enumerate(nb.cells) if is_grade(c) or is_task(c)), default=-1)


def _job_cells(nb, tests: dict, skip: dict, trailing: bool = False) -> list:
    """The cells the clean room runs: the notebook's code cells, each test cell in the course's words.
    Unless `trailing`, none after the last graded cell: nothing that runs later can change a score."""
    cells, last = [], len(nb.cells) if trailing else last_graded_cell(nb)
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or index > last:
            continue
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        is_test = grade_id in tests
        source = tests[grade_id] if is_test else cell.source
        if index in skip:
            source = f"raise RuntimeError({('autograder: ' + skip[index])!r})"
        cells.append({"index": index, "grade_id": grade_id if is_test else None, "test": is_test, "source": source})
    return cells


class ForkServerBroken(RuntimeError):
    pass


class CudaAtImport(ForkServerBroken):
    """Importing a library initialized CUDA in the server: its children could not use the GPU."""


@functools.cache
def course_imports(assignment: str) -> tuple:
    """What the instructor's notebook of `assignment` imports: a fork server imports it once, before the
    first job of that assignment forks (never what a submission names: that is imported in the job's child)."""
    return tuple(imported_modules(read_notebook_node(assignment)))


class ForkServer:
    """One fork server (instructor/grading/cleanroom.py `serve`): started once per grading worker, in a
    jail of its own, with what grading imports already imported; each notebook then runs in a child it
    forks, in a folder of its own that is wiped afterwards. A start costs seconds; a fork, milliseconds."""

    def __init__(self, assignment: str, env: dict, isolation: str):
        import socket
        self.isolation, self.alive = isolation, True
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix=f"cleanroom-{assignment}-"))
        self.log_path = self.dir.parent / f"{self.dir.name}.log"  # outside what the jail lets it write
        self.log = open(self.log_path, "wb")
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        command = [sys.executable, "-I", "-c", SERVER.format(root=str(ROOT)), str(theirs.fileno())]
        if isolation == "namespaces":  # the server is the namespace's PID 1: the cells never are
            command = [*UNSHARE, sys.executable, "-m", "instructor.grading.jail", str(self.dir), "--", *command]
        server_env = server_environment(env)
        server_env.update(HOME=str(self.dir), PYTHONDONTWRITEBYTECODE="1", MPLBACKEND="Agg",
                          MPLCONFIGDIR=str(self.dir / ".matplotlib"), PYTORCH_NVML_BASED_CUDA_CHECK="1")
        self.process = subprocess.Popen(command, cwd=self.dir, env=server_env, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=self.log, pass_fds=(theirs.fileno(),),
                                        start_new_session=True)
        theirs.close()
        self.pending = b""  # what the server sent beyond the last whole line
        self.warmed = set(PRELOAD)
        self._send({"path": [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p], "preload": PRELOAD})
        ready = self._reply(timeout=300)
        if not ready or not ready.get("ready"):
            error = (ready or {}).get("error") or self._log_tail() or "the fork server did not start"
            self.close()
            raise ForkServerBroken(error)
        self.server_pid = self._server_pid()

    def _server_pid(self) -> int:
        """The server's pid as this machine sees it (inside its namespace it is 1)."""
        import psutil
        if self.isolation != "namespaces":
            return self.process.pid
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # unshare -> (jail, which execs) -> the server
            children = psutil.Process(self.process.pid).children()
            if children:
                return children[0].pid
            time.sleep(0.01)
        raise ForkServerBroken("the fork server's process was not found")

    def warm(self, modules) -> None:
        """Import `modules` in the server (once each), so every later child has them: PEFT and bitsandbytes
        cost seconds, and only Exercises 4 and 5 import them. Raises CudaAtImport if that initialized CUDA
        (the server then quits: its children could not use the GPU)."""
        missing = [m for m in modules if m not in self.warmed]
        if not missing:
            return
        self._send({"warm": missing})
        reply = self._reply(timeout=300) or {}
        if not reply.get("warmed"):
            self.alive = False
            error = reply.get("error") or self._log_tail() or "the fork server stopped while importing"
            raise (CudaAtImport if "CUDA was initialized" in error else ForkServerBroken)(error)
        self.warmed.update(missing)

    def _log_tail(self) -> str:
        self.log.flush()
        text = self.log_path.read_text(errors="replace").strip()
        return text.splitlines()[-1] if text else ""

    def _send(self, message: dict, fds=()) -> None:
        import socket
        import struct
        data = json.dumps(message).encode()
        try:
            socket.send_fds(self.sock, [struct.pack("!I", len(data))], list(fds))
            self.sock.sendall(data)
        except OSError as error:
            self.alive = False
            raise ForkServerBroken(f"the fork server is gone ({error})")

    def _reply(self, timeout: float):
        """The server's next message, or None after `timeout` s; {"gone": True} once it has closed."""
        import select
        while b"\n" not in self.pending:
            if not select.select([self.sock], [], [], timeout)[0]:
                return None
            try:
                chunk = self.sock.recv(65536)
            except OSError:
                chunk = b""
            if not chunk:
                return {"gone": True}
            self.pending += chunk
        line, self.pending = self.pending.split(b"\n", 1)
        return json.loads(line)

    def run(self, job: dict, key: bytes, limits) -> tuple:
        """Run one job: (records, cells running when forged records came, why it was stopped or None, the
        cell running then)."""
        room = self.dir / "job"
        shutil.rmtree(room, ignore_errors=True)
        for name in ("home/.ipython", "home/.cache", "tmp", "work", "pycache"):
            (room / name).mkdir(parents=True, exist_ok=True)
        job = {**job, "cwd": str(room / "work"), "pycache": str(room / "pycache"), "env": own_folders(room)}
        read_fd, write_fd = os.pipe()
        try:
            self._send({**job, "key": key.hex()}, [write_fd])
        except ForkServerBroken:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        # each cell may show max_output_bytes (JSON can double it), and the records need a little besides
        reader = _Reader(read_fd, key, MAX_RECORD_BYTES + 2 * limits.max_output_bytes * (len(job["cells"]) + 1))
        reader.start()
        stopped = self._watch(reader, limits)
        reader.join(timeout=30)
        shutil.rmtree(room, ignore_errors=True)
        return reader.records, reader.forged_in if reader.forged else [], stopped, reader.running

    def _job_processes(self) -> list:
        import psutil
        try:
            return process_tree(psutil.Process(self.server_pid))
        except psutil.Error:
            return []

    def _watch(self, reader, limits):
        """Wait for the job to end; stop it past a limit. Returns why it was stopped, or None."""
        deadline, why, self.peak = time.monotonic() + limits.notebook_timeout, None, 0
        job_pid = None
        while True:
            reply = self._reply(timeout=0.05)
            if reply is not None and "exit" in reply:
                return why
            if reply is not None and "started" in reply:
                job_pid = reply.get("pid")  # this machine's pid only without namespaces (where it matters)
            if (reply is not None and reply.get("gone")) or self.process.poll() is not None or not self._alive():
                self.alive = False  # a cell killed the server (possible without namespaces): its job goes too
                if job_pid and self.isolation != "namespaces":
                    import psutil
                    try:
                        _kill_tree(psutil.Process(job_pid))
                    except psutil.Error:
                        pass
                return why or "stopped the grading process"
            if why:
                continue
            if time.monotonic() > deadline:
                why = f"ran past the {limits.notebook_timeout} s given to the whole notebook"
            elif reader.running is not None and time.monotonic() - reader.started_at > limits.cell_timeout:
                why = f"ran past the {limits.cell_timeout} s limit"
            else:
                procs = self._job_processes()
                if procs:
                    held = _tree_memory(procs)
                    self.peak = max(self.peak, held)
                    why = limit_breach(procs, held, MAX_PROCESSES, limits.memory_mb)
            if why:
                for proc in self._job_processes()[:1]:
                    _kill_tree(proc)

    def _alive(self) -> bool:
        import psutil
        try:
            return psutil.Process(self.server_pid).status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def close(self) -> None:
        self.alive = False
        try:
            self.sock.close()
        except OSError:
            pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        self.log_path.unlink(missing_ok=True)


class _Pool:
    """Idle fork servers by (assignment, isolation, environment); each serves one worker at a time."""

    def __init__(self):
        self.idle, self.lock = {}, threading.Lock()
        self.cold = set()  # keys whose servers must not import the course's libraries (they initialize CUDA)
        atexit.register(self.close)

    @contextlib.contextmanager
    def server(self, assignment: str, env: dict, isolation: str):
        key = (isolation, tuple(sorted(server_environment(env).items())))  # serves any assignment
        with self.lock:
            free = self.idle.get(key, [])
            server = free.pop() if free else None
        if server is None or not server.alive:
            server = ForkServer(assignment, env, isolation)
        if key not in self.cold:
            try:
                server.warm(course_imports(assignment))
            except CudaAtImport:  # from now on each notebook imports the rest itself: slower, correct
                self.cold.add(key)
                server.close()
                server = ForkServer(assignment, env, isolation)
            except ForkServerBroken:
                server.close()
                raise
        try:
            yield server
        finally:
            if server.alive:
                with self.lock:
                    self.idle.setdefault(key, []).append(server)
            else:
                server.close()

    def close(self):
        with self.lock:
            servers = [s for free in self.idle.values() for s in free]
            self.idle.clear()
        for server in servers:
            server.close()


POOL = _Pool()


def read_notebook_node(assignment: str):
    import nbformat
    return nbformat.from_dict(read_notebook(notebook_path(assignment)))


def _one_run(server, nb, tests, skip, limits) -> tuple:
    job = {"preload": PRELOAD + imported_modules(nb), "cells": _job_cells(nb, tests, skip, limits.trailing_cells),
           "max_output_bytes": limits.max_output_bytes}
    records = server.run(job, secrets.token_bytes(32), limits)
    return (*records, server.peak)


def verdicts(nb, assignment: str, sandbox: pathlib.Path, env: dict, limits, isolation: str,
             skip: dict = None, tests: dict = None) -> Verdicts:
    """Run every test cell of `nb` (the notebook as the kernel graded it) in the clean room. `tests`
    (grade_id -> source) replaces the course's own test cells, for tests of the clean room itself."""
    started, tests = time.perf_counter(), tests if tests is not None else test_cells(assignment)
    skip, failed_tests, result = dict(skip or {}), {}, Verdicts()
    if not limits.trailing_cells:
        result.last_run_cell = last_graded_cell(nb)
    try:
        for attempt in range(MAX_ATTEMPTS):
            result.attempts = attempt + 1
            try:
                with POOL.server(assignment, env, isolation) as server:
                    records, forged, stopped, running, peak = _one_run(server, nb, tests, {**skip, **failed_tests},
                                                                       limits)
                result.peak_memory_mb = max(result.peak_memory_mb, round(peak / 2**20, 1))
            except ForkServerBroken as error:
                result.broken = str(error)
                return result
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
            result.outputs = {record["cell"]: record.get("outputs") or [] for record in done}
            result.cell_seconds = {record["cell"]: record.get("seconds") for record in done}
            result.stopped = {running: stopped} if stopped and running is not None else {}
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
