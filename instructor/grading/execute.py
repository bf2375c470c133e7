"""The run: a submission's cells in the clean room, its checks judged here.

The worker keeps a fork server per grading worker (`ForkServer`, running instructor/grading/cleanroom.py
`serve` in a jail of its own); for each notebook the server forks a child that runs the cells. The child is
the student's process: what it reports (which cell started, what it printed) only fills the graded notebook.
Its hidden checks' collectors talk to a judge `Session` (instructor/grading/judge.py) over the same channel,
and the judge's verdicts are the grade.

Here too is the watchdog: a cell that hangs, exhausts memory or processes, or kills its process is removed
and the notebook run again without it (a fresh fork, fresh inputs for every check), so the rest is still
graded; each reason is reported.
"""
import atexit
import contextlib
import dataclasses
import functools
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

from instructor.grading import judge, reference
from instructor.grading.kernel import (_kill_tree, _tree_memory, describe_cell, imported_modules, limit_breach,
                                      process_tree)
from instructor.grading.sandbox import UNSHARE, jail_options, own_folders
from instructor.course.notebooks import ROOT, notebook_path, read_notebook

# What every fork server imports at its start (and the collectors); each assignment's other libraries come with
# its first job (course_imports): bitsandbytes and PEFT cost seconds.
PRELOAD = ["torch", "numpy", "matplotlib.pyplot", "IPython.display", "tqdm.auto", "utils", "colab_setup",
           # transformers imports a model's code when it is first named: every exercise names GPT-2 (5 s a child)
           "transformers.models.gpt2.modeling_gpt2", "transformers.pytorch_utils"]
SERVER = ("import sys; sys.path.insert(0, {root!r}); "
          "from instructor.grading.cleanroom import serve; serve(int(sys.argv[1]))")
# Set per notebook by the fork server's child; everything else of the environment is the server's.
PER_JOB = tuple(own_folders(pathlib.Path("/")))  # each job sets its own
VOLATILE = ("PYTEST_",)  # changes under a worker that stays the same (pytest names the running test)


def server_environment(env: dict) -> dict:
    return {k: v for k, v in env.items() if k not in PER_JOB and not k.startswith(VOLATILE)}
MAX_ATTEMPTS = 6
MAX_PROCESSES = 32
JUDGE_GRACE = 120  # seconds a judge may take over one check (a CUDA reference's first load) before the cell is stopped
MAX_LINE_BYTES = 64 * 2**20  # one message of the notebook's process (a check's data, a cell's outputs)
MAX_CHANNEL_BYTES = 512 * 2**20  # all it may send in one run
MAX_GARBAGE = 1_000  # unreadable messages in one run before nothing more is read (each costs the worker a parse)


@dataclasses.dataclass
class Verdicts:
    passed: dict = dataclasses.field(default_factory=dict)  # grade_id -> bool: the judge's verdict
    messages: dict = dataclasses.field(default_factory=dict)  # grade_id -> the judge's message (or why it never ran)
    judged: dict = dataclasses.field(default_factory=dict)  # grade_id -> whether the judge saw data for it
    removed: dict = dataclasses.field(default_factory=dict)  # cell index -> (cell, reason)
    errors: dict = dataclasses.field(default_factory=dict)  # cell index -> the error it ended with (last run)
    flags: list = dataclasses.field(default_factory=list)
    notes: list = dataclasses.field(default_factory=list)  # what the channel's misuse cost, for the student
    broken: str = None  # the clean room could not run at all (the grader's problem, not the student's)
    attempts: int = 0
    seconds: float = 0.0
    armed: dict = dataclasses.field(default_factory=dict)  # what the child armed ("" where it worked)
    outputs: dict = dataclasses.field(default_factory=dict)  # cell index -> nbformat outputs (last run)
    cell_seconds: dict = dataclasses.field(default_factory=dict)  # cell index -> seconds it ran (last run)
    stopped: dict = dataclasses.field(default_factory=dict)  # cell index -> why it was stopped (last run)
    peak_memory_mb: float = 0.0
    last_run_cell: int = 10**9  # cells after this index were not run (see last_graded_cell)

    @property
    def why(self) -> dict:
        """grade_id -> why it failed."""
        return {g: self.messages.get(g, "it failed") for g, ok in self.passed.items() if not ok}


def test_cells(assignment: str) -> dict:
    """grade_id -> source of every autograded test cell, from the course's own source notebook."""
    out = {}
    for cell in read_notebook(notebook_path(assignment))["cells"]:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("grade") and cell["cell_type"] == "code":
            out[meta["grade_id"]] = "".join(cell["source"])
    return out


class _Channel(threading.Thread):
    """The worker's end of one run's channel: the child's reports, and its checks' asks and answers, each
    answered by the judge `session`. Everything that arrives is untrusted: a line that is not a known
    message is garbage (a check waiting for its answer then fails), and past the limits nothing more is read."""

    def __init__(self, sock, session, cells: set, limit: int = MAX_CHANNEL_BYTES):
        super().__init__(daemon=True)
        self.sock, self.session, self.cells, self.limit = sock, session, cells, limit
        self.done, self.ready, self.ended, self.broken = {}, None, False, None
        self.running, self.started_at, self.judging_since = None, None, None
        self.judge_seconds, self.garbage, self.overflow = 0.0, 0, None

    def run(self):
        partial, waiting, total = [], 0, 0  # the pieces of the line not yet ended, and their length
        try:
            while True:
                chunk = self.sock.recv(1 << 20)
                if not chunk:
                    break
                total += len(chunk)
                pieces = chunk.split(b"\n")  # each byte is copied once, however many lines a chunk holds
                waiting = waiting + len(pieces[0]) if len(pieces) == 1 else len(pieces[-1])
                if len(pieces) == 1:
                    partial.append(chunk)
                else:
                    for line in [b"".join([*partial, pieces[0]]), *pieces[1:-1]]:
                        if self.garbage > MAX_GARBAGE:
                            break
                        self._take(line)
                    partial = [pieces[-1]]
                if total > self.limit or waiting > MAX_LINE_BYTES or self.garbage > MAX_GARBAGE:
                    self.overflow = "more than the grader reads"
                    self.session.garbage(self.overflow)
                    break
        except OSError:
            pass
        finally:
            try:
                self.sock.close()
            except OSError:
                pass

    def _take(self, line: bytes):
        try:
            message = json.loads(line)
        except (ValueError, RecursionError):  # not JSON, or nested past what the parser takes
            message = None
        event = message.get("event") if type(message) is dict else None
        if event in ("ask", "answer"):
            return self._judge(message)
        if event == "start" and type(message.get("cell")) is int and message["cell"] in self.cells:
            self.running, self.started_at = message["cell"], time.monotonic()
        elif event == "done" and message.get("cell") == self.running and self.running is not None:
            self.done[self.running] = message
            self.running = None
        elif event == "ready" and self.ready is None:
            self.ready = {k: str(v)[:300] for k, v in message.items() if k != "event"}
        elif event == "end":
            self.ended = True
        elif event == "broken" and self.ready is None:
            self.broken = str(message.get("error"))[:2000]
        else:
            self.garbage += 1
            self.session.garbage("something the grader cannot read")

    def _judge(self, message):
        self.judging_since = time.monotonic()
        try:
            reply = self.session.handle(message)
        finally:  # the judge's own time is not the notebook's
            spent = time.monotonic() - self.judging_since
            self.judge_seconds += spent
            if self.started_at is not None:
                self.started_at += spent
            self.judging_since = None
        try:
            self.sock.sendall(json.dumps(reply).encode() + b"\n")
        except OSError:
            pass


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


def _fresh_room(room: pathlib.Path) -> None:
    """`room` emptied (never following a link a notebook left in it) and its folders made again. The folder
    itself stays: inside the jail it is the mount point of the one writable place."""
    if room.is_symlink() or (room.exists() and not room.is_dir()):
        room.unlink()
    room.mkdir(parents=True, exist_ok=True)
    for entry in os.scandir(room):
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)
    for name in ("home/.ipython", "home/.cache", "tmp", "work"):
        (room / name).mkdir(parents=True, exist_ok=False)


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
            command = [*UNSHARE, sys.executable, "-m", "instructor.grading.jail", str(self.dir),
                       *jail_options(env), "--", *command]
        server_env = server_environment(env)
        # Home, temporary files and caches are where each job's are (job/, emptied after every job, the one folder
        # the jail leaves writable): /tmp is hidden there, and libraries pick cache folders while the server imports.
        _fresh_room(self.dir / "job")
        server_env.update(own_folders(self.dir / "job"))
        server_env.update(PYTHONDONTWRITEBYTECODE="1", MPLBACKEND="Agg", PYTORCH_NVML_BASED_CUDA_CHECK="1")
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

    def run(self, job: dict, session, limits):
        """Run one job, its checks judged by `session`: (the channel, why it was stopped or None)."""
        import socket
        room = self.dir / "job"
        try:
            _fresh_room(room)
        except OSError as error:  # what a notebook left there could not be cleared: this server is done
            self.alive = False
            raise ForkServerBroken(f"the fork server's job folder could not be emptied ({error})")
        job = {**job, "cwd": str(room / "work"), "env": own_folders(room)}
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._send(job, [theirs.fileno()])
        except ForkServerBroken:
            ours.close()
            raise
        finally:
            theirs.close()
        channel = _Channel(ours, session, {cell["index"] for cell in job["cells"]})
        channel.start()
        stopped = self._watch(channel, limits)
        channel.join(timeout=30)
        try:
            _fresh_room(room)
        except OSError:
            self.alive = False  # not used again: the pool closes it
        return channel, stopped

    def _job_processes(self) -> list:
        import psutil
        try:
            return process_tree(psutil.Process(self.server_pid))
        except psutil.Error:
            return []

    def _watch(self, channel, limits):
        """Wait for the job to end; stop it past a limit (the judge's own time not counted). Returns why it
        was stopped, or None."""
        started, why, self.peak = time.monotonic(), None, 0
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
            if channel.judging_since is not None:  # the judge is working: the notebook waits on it...
                if time.monotonic() - channel.judging_since <= max(limits.cell_timeout, JUDGE_GRACE):
                    continue
                why = f"kept the grader's judge busy past {max(limits.cell_timeout, JUDGE_GRACE)} s"  # ...not for ever
            elif time.monotonic() - started - channel.judge_seconds > limits.notebook_timeout:
                why = f"ran past the {limits.notebook_timeout} s given to the whole notebook"
            elif channel.running is not None and time.monotonic() - channel.started_at > limits.cell_timeout:
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


def _one_run(server, nb, tests, skip, limits, session):
    job = {"preload": PRELOAD + imported_modules(nb), "cells": _job_cells(nb, tests, skip, limits.trailing_cells),
           "max_output_bytes": limits.max_output_bytes}
    channel, stopped = server.run(job, session, limits)
    return channel, stopped, server.peak


def verdicts(nb, assignment: str, sandbox: pathlib.Path, env: dict, limits, isolation: str,
             skip: dict = None, tests: dict = None, judges=None, context=None) -> Verdicts:
    """Run `nb` in the clean room, its checks judged here. `tests` (grade_id -> source) and `judges` (a module
    of ask_/judge_ functions) replace the course's own test cells and judges, for tests of the clean room
    itself; `context()` gives each check's judge a fresh Context (instructor/grading/reference.py)."""
    started, tests = time.perf_counter(), tests if tests is not None else test_cells(assignment)
    context = context or reference.context_factory(env)
    skip, result = dict(skip or {}), Verdicts()
    cell_of = {cell.metadata.get("nbgrader", {}).get("grade_id"): index for index, cell in enumerate(nb.cells)}
    if not limits.trailing_cells:
        result.last_run_cell = last_graded_cell(nb)
    try:
        for attempt in range(MAX_ATTEMPTS):
            result.attempts = attempt + 1
            session = judge.Session(assignment, tests, context, judges)
            try:
                with POOL.server(assignment, env, isolation) as server:
                    channel, stopped, peak = _one_run(server, nb, tests, skip, limits, session)
                result.peak_memory_mb = max(result.peak_memory_mb, round(peak / 2**20, 1))
            except ForkServerBroken as error:
                result.broken = str(error)
                return result
            if channel.broken:
                result.broken = channel.broken
                return result
            if channel.ready is None:
                result.broken = stopped or "the clean room stopped before it was ready"
                return result
            result.armed = channel.ready
            done = {index: _report(record) for index, record in channel.done.items()}
            result.errors = {i: r["error"] or "an error" for i, r in done.items() if r["raised"]}
            result.outputs = {i: r["outputs"] for i, r in done.items()}
            result.cell_seconds = {i: r["seconds"] for i, r in done.items()}
            running = channel.running
            result.stopped = {running: stopped} if stopped and running is not None else {}
            culprit, why = (None, None) if channel.ended else (
                running, stopped or "stopped the Python process (it exited or crashed)")
            outcomes = session.finish()
            for grade_id, outcome in outcomes.items():
                index = cell_of.get(grade_id)
                message = outcome.message
                if not outcome.judged:
                    message = _never_judged(index, done, culprit, why, skip, outcome.message)
                result.passed[grade_id], result.messages[grade_id] = outcome.passed, message
                result.judged[grade_id] = outcome.judged
            result.flags += [p for p in session.problems if p not in result.flags]
            if channel.garbage or channel.overflow:
                said = [f"{channel.garbage} message(s) the grader could not read"] if channel.garbage else []
                said += [channel.overflow] if channel.overflow else []
                note = (f"the notebook's process sent {' and '.join(said)} on the grading channel; a check waiting "
                        "for its data then earned nothing")
                result.notes.append(note)
                result.flags.append(note)
            if culprit is None:
                return result
            cell = nb.cells[culprit]
            skip[culprit] = f"this cell {why}"
            if cell.metadata.get("nbgrader", {}).get("grade_id") not in tests:
                result.removed[culprit] = (describe_cell(cell, culprit), why)
        result.broken = f"still stopping after {MAX_ATTEMPTS} runs"
        return result
    finally:
        result.seconds = round(time.perf_counter() - started, 2)
        for grade_id in tests:
            if grade_id not in result.passed:
                result.passed[grade_id], result.judged[grade_id] = False, False
                result.messages.setdefault(grade_id, "the clean room never reached this check")


def _never_judged(index, done, culprit, why, skip, fallback) -> str:
    """Why a check earned nothing without being judged, from what the run shows of its cell."""
    if index in skip:
        return f"its test cell {skip[index].removeprefix('this cell ')}, so the check was not run"
    if index is not None and index == culprit:
        return f"its test cell {why}, so the check could not finish"
    record = done.get(index)
    if record is None:
        return "the clean room never reached this check" if fallback == judge.NEVER_REPORTED else fallback
    if record["raised"]:
        return f"the hidden check did not run: the cell stopped at an error first ({record['error'] or 'an error'})"
    return fallback


def _report(record: dict) -> dict:
    """A child's report of one cell, in the shape the graded notebook takes (anything else is dropped)."""
    error = record.get("error")
    seconds = record.get("seconds")
    return {"raised": record.get("raised") is True, "error": _utf8(error[:2000]) if type(error) is str else None,
            "seconds": seconds if type(seconds) in (int, float) else None,
            "outputs": [o for o in map(_output, record.get("outputs") or []) if o][:200]
            if type(record.get("outputs")) is list else []}


def _utf8(text: str) -> str:
    """`text` as UTF-8 can hold it: a lone surrogate a notebook printed would break writing the graded notebook."""
    return text.encode("utf-8", "replace").decode("utf-8")


def _strings(value, limit=60) -> list:
    return [_utf8(v) for v in value[:limit] if type(v) is str] if type(value) is list else []


def _output(output) -> dict:
    """One nbformat output as the clean room writes them, rebuilt from exact types; None for anything else."""
    if type(output) is not dict:
        return None
    kind = output.get("output_type")
    if kind == "stream" and output.get("name") in ("stdout", "stderr") and type(output.get("text")) is str:
        return {"output_type": "stream", "name": output["name"], "text": _utf8(output["text"])}
    if kind in ("execute_result", "display_data") and type(output.get("data")) is dict:
        data = {k: _utf8(v) for k, v in output["data"].items() if k in ("text/plain", "image/png") and type(v) is str}
        if not data:
            return None
        shown = {"output_type": kind, "data": data, "metadata": {}}
        if kind == "execute_result":
            shown["execution_count"] = None
        return shown
    if kind == "error" and type(output.get("ename")) is str and type(output.get("evalue")) is str:
        return {"output_type": "error", "ename": _utf8(output["ename"][:200]), "evalue": _utf8(output["evalue"][:2000]),
                "traceback": _strings(output.get("traceback"))}
    return None
