"""The kernel engine: nbgrader autograde in a Jupyter kernel, with nbgrader's Execute step hardened for
grading notebooks nobody has vetted (GuardedExecute), each submission in a throw-away nbgrader course.

nbgrader_config.py puts GuardedExecute in place of nbgrader's own Execute, so `nbgrader autograde` (the
reference runs of `make course`) and `python -m instructor grade --engine kernel` use it. Besides nbgrader's per-cell timeout it
- caps what each cell may print, so a notebook printing gigabytes is saved small;
- kills the kernel when it holds more than `memory_limit_mb` or starts more than `max_processes`;
- gives the whole notebook `notebook_timeout` seconds: cells not reached by then fail, saying why;
- when one cell kills the kernel, hangs through an interrupt or exhausts memory, runs the notebook again
  without that cell, so everything else is still graded and the reason is recorded.

In a kernel the hidden checks judge in the notebook's own process, as in stock nbgrader: nothing here
stops a notebook from forging its verdicts, which is why `python -m instructor grade --engine kernel`
keeps a test cell's points only where the clean room's judge passed it too (docs/grading.md).

With `report_path` set it writes what happened (cells removed and why, timeouts, truncations,
peak memory) as JSON, updated before each cell so that it survives even if this process is killed.
"""
import functools
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import copy
import json
import math
import re
import threading
from queue import Empty
from time import monotonic

from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbclient.util import ensure_async, run_sync
from nbformat import NotebookNode
from nbgrader.preprocessors import Execute
from traitlets import Integer, Unicode, default

from instructor import nbgrader_ops
from instructor.course.notebooks import ROOT, notebook_path
from instructor.grading.sandbox import UNSHARE, Limits, pythonpath, run_environment

IMPORT_LINE = re.compile(r"^\s*(?:from\s+([A-Za-z_][\w.]*)\s+import\b|import\s+([A-Za-z_][\w.]*(?:\s*,\s*[A-Za-z_][\w.]*)*))",
                         re.M)

GRADER_IMPORT = re.compile(r"^\s*from\s+graders\s+import\s+(ex\w+)", re.M)


class Offence(Exception):
    """A cell that cannot stay in the notebook: it is removed and the notebook run again."""

    def __init__(self, index: int, reason: str):
        super().__init__(reason)
        self.index, self.reason = index, reason


def imported_modules(nb) -> list:
    """Modules the notebook's code cells import (a regex, so cells with magics or syntax errors count);
    `from graders import ex1_memory` counts as graders.ex1_memory, the grader it uses."""
    names = set()
    for cell in nb.cells:
        if cell.cell_type == "code":
            for from_name, import_names in IMPORT_LINE.findall(cell.source):
                names.update([from_name] if from_name else [n.strip() for n in import_names.split(",")])
            names.update(f"graders.{name}" for name in GRADER_IMPORT.findall(cell.source))
    return sorted(names)


def describe_cell(cell, index: int) -> str:
    """'cell 14 (`while True: pass`)' or 'cell 6 (test_to_gb)': how reports name a cell."""
    grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
    first = next((ln.strip() for ln in cell.source.splitlines() if ln.strip() and not ln.strip().startswith("#")), "")
    label = grade_id or (f"`{first[:40]}{'...' if len(first) > 40 else ''}`" if first else "empty")
    return f"cell {index + 1} ({label})"


def _message_size(msg) -> int:
    content = msg.get("content", {})
    if "text" in content:
        return len(content["text"])
    if "data" in content:
        return sum(len(v) if isinstance(v, str) else len(json.dumps(v)) for v in content["data"].values())
    return sum(len(line) for line in content.get("traceback", []))


def _error_output(ename: str, evalue: str) -> NotebookNode:
    return NotebookNode(output_type="error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"])


def process_tree(root) -> list:
    """The processes under `root` (psutil.Process objects), from /proc/<pid>/task/<tid>/children: only this
    tree's files are read, where psutil's children(recursive=True) reads every process on the machine (about
    4 ms a look on a busy machine, and the watchdogs look twenty times a second). psutil's way where Linux
    keeps no such files."""
    import psutil
    if not _children_files():
        try:
            return root.children(recursive=True)
        except psutil.NoSuchProcess:
            return []
    found, stack = [], [root.pid]
    while stack:
        pid = stack.pop()
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:  # gone since its parent listed it
            continue
        for tid in tasks:  # a child forked by another thread of the process is listed under that thread
            try:
                with open(f"/proc/{pid}/task/{tid}/children", encoding="ascii") as listing:
                    children = [int(child) for child in listing.read().split()]
            except (OSError, ValueError):
                continue
            for child in children:
                try:
                    found.append(psutil.Process(child))
                except psutil.Error:
                    continue
                stack.append(child)
    return found


@functools.cache
def _children_files() -> bool:
    return os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children")


def _tree_memory(procs) -> int:
    """Bytes the kernel and its children hold. With children, proportional set sizes: forked children
    share their parent's pages, and summing resident sizes would count those pages once per child."""
    import psutil
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss if len(procs) == 1 else proc.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


def limit_breach(procs: list, held: int, max_processes: int, memory_limit_mb: int, overhead: int = 0):
    """Why a process tree (`held` bytes) breaks the process or memory limit, or None. `overhead`: processes
    of the harness's own in the tree, not counted against the notebook."""
    if len(procs) > max_processes + overhead:
        return f"started more than {max_processes} processes"
    if held > memory_limit_mb * 2**20:
        return f"used more than {memory_limit_mb:,} MB of memory"
    return None


def _kill_tree(root) -> None:
    """Stop `root` and every process under it: freeze first, so none can fork while the tree is listed."""
    import psutil
    frozen, found = set(), [root]
    while found:
        for proc in found:
            try:
                proc.suspend()
            except psutil.NoSuchProcess:
                pass
            frozen.add(proc)
        found = [p for p in process_tree(root) if p not in frozen]  # [] once root is gone
    for proc in frozen:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass


class GuardedExecute(Execute):
    memory_limit_mb = Integer(6144, help="Kill the kernel (and remove the cell) above this resident memory.").tag(
        config=True)
    max_processes = Integer(32, help="Kill the kernel if it and its children number more than this.").tag(config=True)
    max_output_bytes = Integer(1_000_000, help="Keep at most this much output per cell.").tag(config=True)
    notebook_timeout = Integer(3600, help="Seconds for the whole notebook, re-runs included.").tag(config=True)
    max_removed_cells = Integer(3, help="Give up after removing this many cells.").tag(config=True)
    report_path = Unicode("", help="Where to write the JSON report ('' for none).").tag(config=True)

    @default("shutdown_kernel")
    def _kill_when_done(self):
        # Once the last cell has run nothing the kernel does can change a grade: kill it, rather than let it run
        # the notebook's own atexit hooks and finalize torch (about 0.7 s of CPU a kernel).
        return "immediate"

    # -- the notebook, run until no cell has to be removed ------------------------------------------
    def preprocess(self, nb, resources=None, km=None):
        original = copy.deepcopy(nb)
        self._deadline = monotonic() + self.notebook_timeout
        self._report = {"removed": {}, "timed_out": [], "truncated": [], "not_run": [], "peak_memory_mb": 0.0,
                        "attempts": 0, "running": None, "failed": None}
        while True:
            self._report["attempts"] += 1
            self._new_attempt()
            try:
                return super().preprocess(self._without_removed(original), resources, km)
            except Exception as error:  # noqa: BLE001 - sorted into offences and real failures below
                offence = self._as_offence(error)
                removed = self._report["removed"]
                if offence is None or str(offence.index) in removed or len(removed) >= self.max_removed_cells:
                    self._report["failed"] = f"{type(error).__name__}: {error}"
                    raise
                where = describe_cell(original.cells[offence.index], offence.index)
                self.log.warning("Removing %s and running the notebook again: it %s", where, offence.reason)
                removed[str(offence.index)] = {"cell": where, "reason": offence.reason}
            finally:
                self._stop_watchdog()
                self._write_report()

    def _new_attempt(self):
        self._running, self._last_run, self._exit_requested = None, None, False
        self._killed_because, self._watchdog_stop = None, None
        self._output_bytes = {}
        self._kernel_process = None

    def _without_removed(self, nb):
        nb = copy.deepcopy(nb)
        for index, removal in self._report["removed"].items():
            why = removal["reason"]
            nb.cells[int(index)].source = (f"# The autograder removed this cell's code: it {why}.\n"
                                           f"raise RuntimeError({('autograder: this cell ' + why)!r})")
        return nb

    def _as_offence(self, error):
        if isinstance(error, Offence):
            return error
        # The kernel answered a check after the previous cell, so whatever it does now, this cell did.
        culprit = self._running if self._running is not None else self._last_run
        if culprit is None:
            return None
        if self._killed_because:
            return Offence(culprit, self._killed_because)
        if isinstance(error, DeadKernelError):
            return Offence(culprit, "stopped the Python kernel (it exited or crashed)")
        if isinstance(error, CellTimeoutError):
            return Offence(culprit, f"ran past the {self.timeout} s limit and did not stop when interrupted")
        return None

    # -- each cell: time budget, progress, limits -----------------------------------------------------
    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type != "code" or not cell.source.strip():
            return cell, resources
        if monotonic() >= self._deadline:
            cell.outputs = [_error_output("NotRun", f"the notebook used up its {self.notebook_timeout} s of grading "
                                                    "time before this cell")]
            self._report["not_run"].append(index)
            return cell, resources
        self._running = index
        self._report["running"] = index
        self._write_report()
        cell, resources = super().preprocess_cell(cell, resources, index)
        self._last_run, self._running = index, None
        self._check_limits(index)
        if self._exit_requested:  # exit() answers normally, then the kernel shuts down a moment later
            raise Offence(index, "asked the kernel to exit (`exit()` or `quit()`)")
        run_sync(self._async_silent)("", timeout=60)  # is the kernel still there after this cell?
        return cell, resources

    def _get_timeout(self, cell):
        remaining = max(1, math.ceil(self._deadline - monotonic()))
        timeout = super()._get_timeout(cell)
        return min(timeout, remaining) if timeout else remaining

    async def _async_handle_timeout(self, timeout, cell=None):
        self._report["timed_out"].append(self._running)
        self.error_on_timeout = {"ename": "CellTimeoutError",
                                 "evalue": f"this cell ran longer than {timeout} s and was stopped",
                                 "traceback": [f"CellTimeoutError: this cell ran longer than {timeout} s and was "
                                               "stopped by the autograder"]}
        return await super()._async_handle_timeout(timeout, cell)

    def on_cell_executed(self, **kwargs):
        super().on_cell_executed(**kwargs)
        payload = kwargs["execute_reply"]["content"].get("payload", [])
        self._exit_requested = any(p.get("source") == "ask_exit" and not p.get("keepkernel") for p in payload)

    def output(self, outs, msg, display_id, cell_index):
        used = self._output_bytes.get(cell_index, 0)
        self._output_bytes[cell_index] = used + _message_size(msg)
        if used + _message_size(msg) <= self.max_output_bytes:
            return super().output(outs, msg, display_id, cell_index)
        room = self.max_output_bytes - used
        if room > 0 and msg["msg_type"] == "stream":  # keep the start of the text that crosses the line
            msg = {**msg, "content": {**msg["content"], "text": msg["content"]["text"][:room]}}
            super().output(outs, msg, display_id, cell_index)
        if cell_index not in self._report["truncated"]:
            self._report["truncated"].append(cell_index)
            outs.append(NotebookNode(output_type="stream", name="stderr",
                                     text=f"\n[autograder: output truncated: this cell printed more than "
                                          f"{self.max_output_bytes / 1e6:g} MB]\n"))
        return None

    # -- is the kernel still there? ----------------------------------------------------------------
    async def _async_silent(self, code: str, expressions=None, timeout: float = 120):
        msg_id = await ensure_async(self.kc.execute(code, silent=True, store_history=False,
                                                    user_expressions=expressions or {}, stop_on_error=False))
        deadline = monotonic() + timeout
        while monotonic() < deadline:
            try:
                msg = await ensure_async(self.kc.shell_channel.get_msg(timeout=1))
            except Empty:
                await self._async_check_alive()
                continue
            if msg["parent_header"].get("msg_id") == msg_id:
                return msg["content"]
        return None

    # -- memory and process watchdog ----------------------------------------------------------------
    def start_new_kernel(self, **kwargs):  # the sync entry point nbconvert's preprocess() goes through
        super().start_new_kernel(**kwargs)
        self._start_watchdog()

    def _kernel_pid(self):
        provisioner = getattr(self.km, "provisioner", None)
        return getattr(provisioner, "pid", None) or getattr(getattr(provisioner, "process", None), "pid", None)

    def _over_limit(self, kernel):
        """Why the kernel's process tree breaks a limit (None if it does not); records peak memory."""
        procs = [kernel, *process_tree(kernel)]  # a kernel that is gone holds nothing and breaks no limit
        held = _tree_memory(procs)
        self._report["peak_memory_mb"] = max(self._report["peak_memory_mb"], round(held / 2**20, 1))
        return limit_breach(procs, held, self.max_processes, self.memory_limit_mb)

    def _start_watchdog(self):
        import psutil
        pid, stop = self._kernel_pid(), threading.Event()
        if pid is None:
            self.log.warning("No kernel process id: memory and process limits are off for this notebook")
            return
        try:
            kernel = self._kernel_process = psutil.Process(pid)
        except psutil.NoSuchProcess:
            return
        self._watchdog_stop = stop

        def watch():  # while a cell runs: stop a runaway before it takes the machine down
            while not stop.wait(0.05):
                try:
                    why = self._over_limit(kernel)
                except Exception as error:  # noqa: BLE001 - a process vanishing mid-read; look again
                    self.log.debug("watchdog: %s", error)
                    continue
                if why:
                    self._killed_because = why
                    _kill_tree(kernel)
                    return

        threading.Thread(target=watch, name="kernel-watchdog", daemon=True).start()

    def _check_limits(self, index: int):
        """After each cell, the same limits again: a cell that finishes fast (forking children that
        live on, say) must not slip between two looks of the watchdog."""
        kernel = self._kernel_process
        why = self._killed_because or (self._over_limit(kernel) if kernel else None)
        if why:
            self._killed_because = why
            _kill_tree(kernel)
            raise Offence(index, why)

    def _stop_watchdog(self):
        if self._watchdog_stop is not None:
            self._watchdog_stop.set()

    def _write_report(self):
        if self.report_path:
            with open(self.report_path, "w", encoding="utf-8") as f:
                json.dump(self._report, f, indent=1)


# -- the kernel engine's sandbox: a throw-away nbgrader course per submission ------------------------
def course_config(sandbox: pathlib.Path, limits: Limits = None, report: pathlib.Path = None) -> str:
    lines = ["c = get_config()  # noqa: F821 - written by instructor/grading/kernel.py for one submission",
             f"load_subconfig({str(ROOT / 'nbgrader_config.py')!r})  # noqa: F821",
             f"c.CourseDirectory.root = {str(sandbox)!r}",
             f"c.CourseDirectory.db_url = {'sqlite:///' + str(sandbox / 'gradebook.db')!r}"]
    if limits:
        lines += [f"c.Execute.timeout = {limits.cell_timeout}",
                  f"c.GuardedExecute.notebook_timeout = {limits.notebook_timeout}",
                  f"c.GuardedExecute.memory_limit_mb = {limits.memory_mb}",
                  f"c.GuardedExecute.max_output_bytes = {limits.max_output_bytes}",
                  f"c.GuardedExecute.report_path = {str(report)!r}"]
    return "\n".join(lines) + "\n"


def run_nbgrader_command(args, cwd, env=None, timeout=None):
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    return subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PATH": path, "PYTHONPATH": pythonpath(), **(env or {})}, timeout=timeout)


def make_template(assignment: str) -> bytes:
    """A gradebook that knows `assignment` and no student: each sandbox starts from a copy."""
    with tempfile.TemporaryDirectory(prefix="gradebook-template-") as tmp:
        tmp = pathlib.Path(tmp)
        (tmp / "nbgrader_config.py").write_text(course_config(tmp))
        (tmp / "source" / assignment).mkdir(parents=True)
        shutil.copy(notebook_path(assignment), tmp / "source" / assignment)
        done = run_nbgrader_command(["generate_assignment", assignment, "--force", "--create"], tmp)
        if done.returncode != 0 or "Exception while loading config" in done.stderr:
            raise RuntimeError(f"could not make a gradebook for {assignment}:\n{done.stderr[-2000:]}")
        return (tmp / "gradebook.db").read_bytes()


def run_autograde(sandbox: pathlib.Path, job, isolation: str):
    command = [sys.executable, "-m", "nbgrader", "autograde", job.assignment, "--student", job.student, "--force"]
    if isolation == "namespaces":
        command = [*UNSHARE, sys.executable, "-m", "instructor.grading.jail", str(sandbox), "--", *command]
    env = run_environment(sandbox, job)
    with open(sandbox / "nbgrader.log", "w", encoding="utf-8") as log:
        try:
            return subprocess.run(command, cwd=sandbox, env=env, stdout=log, stderr=subprocess.STDOUT,
                                  timeout=job.limits.notebook_timeout + 300, start_new_session=True).returncode
        except subprocess.TimeoutExpired:
            return "timeout"


def gradebook_scores(sandbox: pathlib.Path, assignment: str, student: str) -> dict:
    return {name: list(points) for name, points in nbgrader_ops.cell_scores(assignment, student, sandbox).items()}
