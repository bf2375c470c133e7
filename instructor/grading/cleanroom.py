"""The clean room: the process whose word is a submission's grade.

instructor/grading/execute.py starts it, in a jail of its own, once the notebook has run in its Jupyter
kernel, and writes the notebook's cells and a fresh key to its standard input. Before the first
student line runs, it
- imports everything grading needs and turns every cell into plain Python with IPython's own
  transformer, here and now: nothing a cell registers later can rewrite a test cell, because no
  IPython shell runs the cells (`get_ipython()` is a stand-in that runs the magics it knows);
- takes the test cells as the course wrote them (the worker sends them, not the submission);
- installs an audit hook (sys.addaudithook: it can't be removed) that refuses what could reach the
  grader's own state: frames (sys._getframe, tb_frame, gi_frame...), the garbage collector's object
  lists, trace and profile functions, ctypes and other native back doors, new code objects, new
  processes, links, opening /proc/*/mem;
- asks the Linux kernel (seccomp) to refuse new signal handlers (a handler is handed the running
  frame, the one way to a frame the hook can't see), ptrace and exec, for this process and its children.

Then it runs the cells in order. After each one it compares what grading relies on with how it was
before the first cell (graders/_integrity.py watcher) and writes one record, signed with the key
(HMAC-SHA256), to the verdict pipe; the worker checks every signature. The key lives only in the locals
of `main`: with no way to a frame, nothing a cell runs can read it, so nothing a cell writes to the pipe
passes for a record. What this does not defend against is in docs/grading.md (threat model).
"""
import builtins
import gc
import json
import os
import re
import sys
import time
import types

# Events refused, and reported as tampering: nothing an honest notebook needs while it is graded.
REFUSED = frozenset({"sys.settrace", "sys.setprofile", "sys._current_frames", "sys._current_exceptions",
                     "gc.get_objects", "gc.get_referrers", "gc.get_referents", "code.__new__", "marshal.loads",
                     "marshal.load", "sys.addaudithook", "setopencodehook", "os.system", "os.exec",
                     "os.posix_spawn", "os.spawn", "subprocess.Popen", "pty.spawn", "os.startfile",
                     "cpython.PyInterpreterState_New", "cpython._PySys_ClearAuditHooks"})
REFUSED_PREFIXES = ("sys.monitoring", "_xxsubinterpreters", "_interpreters", "cffi")
# Modules that reach memory or native code directly.
REFUSED_MODULES = ("ctypes", "_ctypes", "cffi", "_cffi_backend", "_testcapi", "_testinternalcapi", "_testbuffer",
                   "_testmultiphase", "_testimportmultiple", "_testsinglephase", "_xxsubinterpreters",
                   "_xxinterpchannels", "_interpreters", "_interpqueues", "_posixshmem", "gdb")
# Refused quietly: libraries ask for frames now and then (namedtuple, enum and typing fall back on a
# ValueError); without them nothing reaches the grader's locals. Not reported: honest code trips them.
FRAME_EVENTS = frozenset({"sys._getframe"})
FRAME_ATTRIBUTES = frozenset({"tb_frame", "gi_frame", "cr_frame", "ag_frame", "f_back", "gi_yieldfrom"})
FUNCTION_INTERNALS = frozenset({"__code__", "__defaults__", "__kwdefaults__", "__closure__", "__globals__"})
TIMEIT_OPTIONS = re.compile(r"^\s*(?:-[nrp]\s*\d+\s*|-[tcqo]\s+)*")
OUTPUT_CUT = "\n[output cut short by the autograder]\n"  # on stdout: stderr in a test cell would cost its points
CELL_MAGICS_RUN = frozenset({"time", "timeit", "capture", "prun", "debug"})  # %%magic whose body is Python


class Refused(ValueError):
    """What the clean room raises for a refused operation (a ValueError: the stdlib copes with those)."""


# -- seccomp: no new signal handlers, no ptrace, no exec ---------------------------------------------
SECCOMP_SYSCALLS = {  # machine: (audit arch, rt_sigaction, [refused outright])
    "x86_64": (0xC000003E, 13, [101, 310, 311, 59, 322]),  # ptrace, process_vm_readv/writev, execve, execveat
    "aarch64": (0xC00000B7, 134, [117, 270, 271, 221, 281]),
}


def install_seccomp() -> str:
    """A seccomp filter for this process and its children; returns "" or why it could not be installed.

    Built by hand (struct sock_filter) and loaded through prctl with ctypes. Also marks the process
    not dumpable, so that no other process of the same user can read its memory through /proc."""
    machine = os.uname().machine
    if machine not in SECCOMP_SYSCALLS:
        return f"no seccomp filter for {machine}"
    arch, sigaction, refused = SECCOMP_SYSCALLS[machine]
    import ctypes
    import struct
    LD_W_ABS, JEQ_K, RET_K = 0x20, 0x15, 0x06
    ALLOW, EPERM = 0x7FFF0000, 0x00050000 | 1

    def op(code, jt, jf, k):
        return struct.pack("HBBI", code, jt, jf, k)

    JGE_K = 0x35
    program = [op(LD_W_ABS, 0, 0, 4), op(JEQ_K, 1, 0, arch), op(RET_K, 0, 0, EPERM),  # another ABI: refused
               op(LD_W_ABS, 0, 0, 0), op(JGE_K, 0, 1, 0x40000000), op(RET_K, 0, 0, EPERM)]  # x32 numbers too
    for number in refused:
        program += [op(JEQ_K, 0, 1, number), op(RET_K, 0, 0, EPERM)]
    # rt_sigaction(sig, act, ...): asking (act == NULL) is fine; setting a handler is refused.
    program += [op(JEQ_K, 0, 5, sigaction), op(LD_W_ABS, 0, 0, 24), op(JEQ_K, 0, 2, 0), op(LD_W_ABS, 0, 0, 28),
                op(JEQ_K, 1, 0, 0), op(RET_K, 0, 0, EPERM), op(RET_K, 0, 0, ALLOW)]
    code = b"".join(program)
    buffer = ctypes.create_string_buffer(code)

    class Fprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER, PR_SET_DUMPABLE = 38, 22, 2, 4
    libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        return f"prctl(NO_NEW_PRIVS) failed: errno {ctypes.get_errno()}"
    prog = Fprog(len(code) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        return f"prctl(SECCOMP) failed: errno {ctypes.get_errno()}"
    return ""


# -- the audit hook: it holds the key, the tamper check and the pen ------------------------------------
def _a_traceback():
    try:
        raise RuntimeError
    except RuntimeError as error:
        return error.__traceback__



def make_hook(key: bytes, fd: int, changes, library_dirs: tuple, ctypes_dir: str):
    """The audit hook. Everything a verdict depends on lives in this closure: the HMAC pads, the verdict
    pipe, the tamper check. No module, frame or object a cell can reach refers to it (the interpreter's
    list of hooks is not visible from Python), so a cell can neither read the key nor quiet the check.

    `main` writes a record with sys.audit("course.cleanroom", ...); the hook signs it only when the
    call comes from the one frame of `main` that wrote the first record, before any cell ran. It runs
    the tamper check itself before signing a cell's "done", with the garbage collector paused and every
    frame request refused, so nothing a cell left behind can watch it work."""
    import _thread
    import gc
    import hashlib
    realpath, str_, bytes_, fsdecode, type_ = os.path.realpath, str, bytes, os.fsdecode, type
    course_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # instructor/grading/
    graders_dir = course_root + os.sep + "graders" + os.sep
    function_type, getframe, get_ident, write, exit_ = type(make_hook), sys._getframe, _thread.get_ident, os.write, os._exit
    sha256, dumps = hashlib.sha256, json.dumps
    pad = key.ljust(64, b"\0")
    inner_pad, outer_pad = bytes(b ^ 0x36 for b in pad), bytes(b ^ 0x5C for b in pad)
    del key, pad
    gc_enabled, gc_disable, gc_enable = gc.isenabled, gc.disable, gc.enable
    traceback_type, tuple_ = type(sys.exc_info()[2] or _a_traceback()), tuple
    refusals, looking = [], set()  # what was refused and reportable; threads in which the hook reads the stack
    state = {"main": None, "seq": 0, "signing": False, "expect": ("ready", None)}

    def refuse(what: str, report: bool = True):
        if report:
            refusals.append(what)
        raise Refused(f"the autograder's clean room does not allow {what}")

    def caller(depth: int):
        """The frame `depth` levels above the hook's caller, read with the hook's own events let through."""
        me = get_ident()
        looking.add(me)
        try:
            # 0 here, 1 record, 2 inspect_event, 3 the hook, 4 the code that raised the event
            return getframe(depth + 4)
        finally:
            looking.discard(me)

    def from_a_cell(skip_dir: str = "<frozen importlib") -> bool:
        """Does the code behind this event come from a cell (rather than an installed library)?"""
        me, skip = get_ident(), ("<frozen importlib", skip_dir)
        looking.add(me)
        try:
            frame = getframe(3)  # 0 here, 1 inspect_event, 2 the hook, 3 the code that raised the event
            while frame is not None and frame.f_code.co_filename.startswith(skip):  # the importer, ctypes itself
                frame = frame.f_back
            return frame is not None and not frame.f_code.co_filename.startswith(library_dirs)
        finally:
            looking.discard(me)

    def memory_file(path) -> bool:
        try:
            path = realpath(fsdecode(path))
        except Exception:  # noqa: BLE001 - a path that can't even be resolved is not opened here
            return True
        parts = path.split("/")  # by name too: os.open("self/mem", dir_fd=<fd of /proc>) names no /proc
        return path in ("/dev/mem", "/dev/kmem", "/dev/port", "/proc/kcore") or parts[-1] in ("mem", "pagemap") or (
            len(parts) > 2 and parts[1] == "proc" and "map_files" in parts)

    def record(args: tuple, collecting: bool):
        """Sign one record of `main`'s. Only `main`'s frame may ask, with the collector off (as `main`
        keeps it: a finalizer run by a collection the notebook switched on is not `main`), and in the
        order `main` writes them (ready, then start and done for each cell, then end)."""
        if state["signing"]:
            refuse("writing a record from inside the grader's own check")
        frame = caller(0)
        kind = args[0] if args and type_(args[0]) is str_ else None
        if state["main"] is None and kind == "ready":
            state["main"] = frame  # the first record comes before any cell has run
        if frame is not state["main"]:  # before anything else of the arguments is looked at
            refuse("writing on the autograder's verdict channel")
        expected_kind, expected_cell = state["expect"]
        in_order = kind == expected_kind or (expected_kind == "start" and kind == "end")
        if kind in ("start", "done") and expected_cell is not None:
            in_order = in_order and args[1] == expected_cell
        if collecting or not in_order:
            refuse("writing on the autograder's verdict channel")
        state["signing"] = True
        try:
            body = {"event": kind}
            if kind in ("start", "done"):
                body["cell"] = args[1]
            state["expect"] = ("done", args[1]) if kind == "start" else ("start", None)
            if kind == "done":
                body.update(grade_id=args[2], raised=args[3] is True, error=args[4], seconds=args[5],
                            outputs=args[6] if len(args) > 6 else [])
                try:
                    tampered = changes()
                except BaseException:  # noqa: BLE001 - a check broken by the cell is tampering too
                    tampered = ["the integrity check itself"]
                body.update(tampered=tampered[:8], refused=list(dict.fromkeys(refusals))[:8])
            elif len(args) > 1:
                body["detail"] = args[1]
            body["seq"] = state["seq"]
            text = dumps(body, sort_keys=True)
            inner = sha256(inner_pad + text.encode()).digest()
            write(fd, f"{sha256(outer_pad + inner).hexdigest()} {text}\n".encode())
            state["seq"] += 1
            if kind == "done" and (body["tampered"] or body["refused"]):
                exit_(2)  # nothing more runs in a process a cell has changed
            if kind in ("end", "broken"):
                exit_(0 if kind == "end" else 3)  # no atexit handler or finalizer of the notebook runs after
        except OSError:
            exit_(4)  # the worker is gone
        finally:
            state["signing"] = False

    def own_frame(traceback) -> bool:
        """Is this traceback entry one of the hook's own frames (which hold the key in their closure)?"""
        me = get_ident()
        looking.add(me)
        try:
            return traceback.tb_frame.f_code in own_code
        finally:
            looking.discard(me)

    def hook(event: str, args: tuple):
        if looking and get_ident() in looking:
            return
        if type_(event) is not str_ or type_(args) is not tuple_:
            return  # only the interpreter's own events, with exact types, are looked at (no notebook code runs here)
        collecting = gc_enabled()
        if collecting:
            gc_disable()  # no finalizer of the notebook's runs while the hook works: it could look at its frame
        try:
            return inspect_event(event, args, collecting)
        finally:
            if collecting:
                gc_enable()

    def inspect_event(event: str, args: tuple, collecting: bool):
        if event == "course.cleanroom":
            return record(args, collecting)
        attribute = args[1] if event == "object.__getattr__" and len(args) > 1 and type_(args[1]) is str_ else None
        if attribute == "tb_frame" and type_(args[0]) is traceback_type and own_frame(args[0]):
            refuse("reading the autograder's own frames")  # whoever asks, a library formatting a traceback too
        if event in FRAME_EVENTS or attribute in FRAME_ATTRIBUTES:
            what = event if event in FRAME_EVENTS else f"reading `{attribute}`"
            if state["signing"]:
                refuse(what)
            if from_a_cell():
                refuse(what)  # a library may look at frames (torch does); a cell has no reason to
            return
        if event.startswith("ctypes."):
            if from_a_cell(ctypes_dir):
                refuse(f"ctypes (`{event}`)")
            return
        if event in REFUSED or event.startswith(REFUSED_PREFIXES):
            refuse(f"`{event}`")
        if event == "import":
            name = args[0] if args and type_(args[0]) is str_ else ""
            if name.split(".")[0] in REFUSED_MODULES and from_a_cell():
                refuse(f"importing `{name}`")
        elif event in ("object.__setattr__", "object.__delattr__"):
            name = args[1] if len(args) > 1 and type_(args[1]) is str_ else ""
            if type_(args[0]) is function_type and name in FUNCTION_INTERNALS and from_a_cell():
                refuse(f"replacing a function's `{name}`")  # libraries do it while importing (transformers)
        elif event in ("os.symlink", "os.link"):
            if from_a_cell():
                refuse(f"`{event}`")  # a link to /proc/self/mem would be opened under another name
        elif event == "open":
            path = args[0] if args else None
            if (type_(path) is str_ or type_(path) is bytes_) and (memory_file(path) or (
                    realpath(fsdecode(path)).startswith(graders_dir) and from_a_cell())):
                refuse(f"opening `{fsdecode(path)}`")

    own_code = {function.__code__ for function in (hook, inspect_event, record, refuse, caller, from_a_cell,
                                                   memory_file, own_frame)}
    return hook


# -- IPython without a shell ------------------------------------------------------------------------
class Shell:
    """What `get_ipython()` returns in the clean room. Magics that matter to Python run; the rest do
    nothing (shell commands, `%matplotlib`, `%pip`...). Whatever a cell registers here goes nowhere: no
    shell runs the cells. Registering anything is still reported (the watcher compares this object)."""

    def __init__(self, ns, transform):
        self.user_ns, self._transform = ns, transform
        self.input_transformers_cleanup, self.input_transformers_post, self.ast_transformers = [], [], []
        self.custom_exceptions, self.config = (), {}
        self.events = _Events()

    def run_line_magic(self, name, line, _stack_depth=1):
        if name in ("time", "timeit"):  # once, without %timeit's options (-n 10 -r 3 -q -o...)
            return self._run(TIMEIT_OPTIONS.sub("", line) if name == "timeit" else line)
        return None

    def run_cell_magic(self, name, line, cell):
        if name in CELL_MAGICS_RUN:
            return self._run(cell)
        if name == "writefile" and line.strip():
            with open(line.split()[-1], "a" if "-a" in line.split() else "w", encoding="utf-8") as f:
                f.write(cell)
        return None

    def _run(self, source):
        code = compile(self._transform(source), "<magic>", "exec")
        exec(code, self.user_ns)  # noqa: S102 - the student's own code, in their own namespace

    def system(self, command):
        return 0

    def getoutput(self, command, split=True):
        return []

    def magic(self, line):
        name, _, rest = line.lstrip("%").partition(" ")
        return self.run_line_magic(name, rest)

    def set_custom_exc(self, exc_tuple, handler):
        self.custom_exceptions = exc_tuple

    def register_magic_function(self, *args, **kwargs):
        return None

    def enable_gui(self, gui=None):
        return None

    def enable_matplotlib(self, gui=None):
        return None, None

    def get_ipython(self):
        return self


class _Events:
    def __init__(self):
        self.callbacks = {}

    def register(self, event, function):
        self.callbacks.setdefault(event, []).append(function)

    def unregister(self, event, function):
        if function in self.callbacks.get(event, []):
            self.callbacks[event].remove(function)


def shell_changes(shell, before: dict, class_before: dict, library_dirs: tuple) -> list:
    """What a cell registered on the stand-in shell: hooks that would change later cells under IPython.
    Event callbacks of installed code are fine (matplotlib registers one to draw figures). Read through
    the instance's and the class's dicts, after checking their keys, so that no code of a cell runs here."""
    spaces = [("get_ipython()", vars(shell)), ("the stand-in shell's class", vars(Shell)),
              ("get_ipython().events", vars(before["events"]))]
    odd = [label for label, space in spaces if any(type(key) is not str for key in list(space))]  # noqa: E721
    if type(shell) is not Shell or odd:  # noqa: E721
        return [f"{label} (a key that is not a string)" for label in odd] or ["get_ipython()"]
    now, cls_now = dict(vars(shell)), dict(vars(Shell))
    found = [f"get_ipython().{name}" for name in now if name not in before or now[name] is not before[name]]
    found += [f"get_ipython().{name} (on its class)" for name in cls_now
              if name not in class_before or cls_now[name] is not class_before[name]]
    if found:
        return found
    found = [f"get_ipython().{name}" for name in ("input_transformers_cleanup", "input_transformers_post",
                                                  "ast_transformers") if now[name]]
    if now["custom_exceptions"]:
        found.append("get_ipython().set_custom_exc")
    callbacks = vars(now["events"]).get("callbacks")
    if type(callbacks) is not dict:  # noqa: E721
        return found + ["get_ipython().events"]
    for event, registered in list(callbacks.items()):
        for callback in list(registered) if type(registered) is list else [None]:  # noqa: E721
            code = callback.__code__ if type(callback) is types.FunctionType else None
            if code is None or not code.co_filename.startswith(library_dirs):
                found.append(f"get_ipython().events ({event})")
    ns = now["user_ns"]
    if type(ns) is not dict or any(type(key) is not str for key in list(ns)):  # noqa: E721
        found.append("the notebook's namespace (a key that is not a string)")
    elif ns.get("__builtins__") is not builtins:
        found.append("the notebook's `__builtins__`")
    return found


def transformer():
    """IPython's own cell transformer (magics, `!` commands, `?` help into Python), loaded now."""
    from IPython.core.inputtransformer2 import TransformerManager
    manager = TransformerManager()
    return manager.transform_cell


def compile_cell(source: str, index: int, transform):
    """A cell as (code of its statements, code of its last expression or None): IPython shows the value
    of a last expression (unless the line ends with `;`). A cell that doesn't compile raises its
    SyntaxError when it runs."""
    import ast
    name = f"<cell {index + 1}>"
    first = source.lstrip().split("\n", 1)[0]
    if first.startswith("%%"):
        magic = first[2:].split()[0] if first[2:].split() else ""
        if magic not in CELL_MAGICS_RUN and magic != "writefile":
            return compile("pass", name, "exec"), None  # %%bash, %%html...: nothing Python runs
    try:
        text = transform(source)
        import linecache
        linecache.cache[name] = (len(text), None, text.splitlines(True), name)  # tracebacks quote the cell
        tree = ast.parse(text, name)
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr) and not text.rstrip().endswith(";"):
            last = compile(ast.Expression(tree.body.pop().value), name, "eval")
        return compile(tree, name, "exec"), last
    except SyntaxError as error:
        message = f"{type(error).__name__}: {error}"
        return compile(f"raise SyntaxError({message!r})", name, "exec"), None


# -- one notebook ------------------------------------------------------------------------------------
def child(job: dict, verdict_fd: int) -> None:
    """Build the clean room for `job`, arm it, run the cells; never returns. After arming, this frame
    holds nothing secret and nothing a cell could change to alter a record (`cells` is a tuple of code
    objects; the key and the tamper check are in the hook), and it calls nothing that could run the
    notebook's code in it."""
    key = bytes.fromhex(job.pop("key"))
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    audit, genuine_builtins, gc_disable = sys.audit, builtins, gc.disable
    try:
        if sys.version_info >= (3, 13):  # frame locals became writable (PEP 667): main's could then be changed
            raise RuntimeError("the clean room needs Python 3.11 or 3.12")
        os.environ.update(job["env"])
        import tempfile
        tempfile.tempdir = None  # TMPDIR is this notebook's
        for path in reversed(job.get("path", [])):
            if path not in sys.path:
                sys.path.insert(0, path)
        os.chdir(job["cwd"])
        sys.pycache_prefix = job["pycache"]  # no .pyc is read after arming: marshal.loads is refused then
        sys.dont_write_bytecode = True
        from graders import _integrity
        _integrity.load_course(job["preload"])
        import IPython.core.getipython
        import IPython.display
        transform = transformer()
        cells = tuple((c["index"], c.get("grade_id"), bool(c["test"]), *compile_cell(c["source"], c["index"], transform))
                      for c in job["cells"])
        ns = {"__name__": "__main__", "__builtins__": builtins}
        shell = Shell(ns, transform)
        ns.update(get_ipython=shell.get_ipython, display=IPython.display.display)
        IPython.core.getipython.get_ipython = IPython.get_ipython = shell.get_ipython
        import logging
        logging._srcfile = None  # logging would ask for a frame to name the caller of every record
        import signal
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # _thread.interrupt_main() from a cell's thread: nothing
        capture = Outputs(int(job.get("max_output_bytes", 1_000_000)))
        library_dirs = _integrity._library_dirs()
        changes = all_changes(_integrity.watcher(), shell, library_dirs)
        seccomp = install_seccomp() if job.get("seccomp", True) else "off"
        import ctypes
        ctypes_dir = os.path.dirname(ctypes.__file__) + os.sep
        sys.addaudithook(make_hook(key, verdict_fd, changes, library_dirs, ctypes_dir))
        del key, changes, ctypes, job, shell
    except BaseException as error:  # noqa: BLE001 - the clean room could not be built: say so, signed
        _sign_once(locals().get("key"), verdict_fd, {"event": "broken", "error": f"{type(error).__name__}: {error}"})
        os._exit(3)
    gc_disable()  # main's frame runs with the collector off: no finalizer of the notebook's can run "as main"
    audit("course.cleanroom", "ready", seccomp)
    for index, grade_id, is_test, code, last in cells:
        audit("course.cleanroom", "start", index)
        raised, error, seconds, outputs = run_cell(code, last, ns, genuine_builtins, capture)
        audit("course.cleanroom", "done", index, grade_id if is_test else None, raised, error, seconds, outputs)
    audit("course.cleanroom", "end")


def run_cell(code, last, ns: dict, builtins_module, capture, exec_=exec, eval_=eval, type_=type, str_=str,
             list_=list, round_=round, gc_enable=gc.enable, gc_disable=gc.disable, perf=time.perf_counter):
    """Run one cell: (raised?, the error as text, seconds, outputs). Everything that can call into the
    notebook's objects (its namespace's keys, its code, its exceptions, its figures) happens in this
    frame, never in `main`'s, and the collector is off again before returning, so that nothing the
    notebook left behind can run while `main` writes the record. The outputs come back as new lists,
    dicts and strs (exact types), built here from what the cell printed, showed and raised."""
    for key in list_(ns):  # iterating compares nothing; a key that is not a str could run code when compared
        if type_(key) is not str_:
            return True, "the notebook's namespace holds a key that is not a string", 0.0, []
    ns["__builtins__"] = builtins_module
    started = perf()
    gc_enable()
    capture.begin()
    try:
        exec_(code, ns)
        if last is not None:
            value = eval_(last, ns)
            if value is not None:
                ns["_"] = value
                capture.result(value)
        outcome = (False, None)
    except BaseException as error:  # noqa: BLE001 - any error is the cell's result, as in Jupyter
        outcome = (True, describe(error))
        capture.error(error, outcome[1])
    finally:
        outputs = capture.end()
        gc_disable()
    return outcome[0], outcome[1], round_(perf() - started, 3), outputs


class _Stream:
    """sys.stdout / sys.stderr while a cell runs: keeps what is written, up to the notebook's allowance."""

    def __init__(self, outputs, name):
        self._outputs, self.name, self.encoding = outputs, name, "utf-8"

    def write(self, text):
        return self._outputs.write(self.name, text)

    def flush(self):
        return None

    def isatty(self):
        return False

    def fileno(self):
        raise OSError("no file descriptor in the autograder")


class Outputs:
    """What a cell shows, as nbformat outputs (plain dicts): streams, the last expression's value,
    matplotlib figures (as the inline backend draws them), and the error it ended with."""

    def __init__(self, limit: int):
        self.limit, self.items, self.size, self.cut = limit, [], 0, False
        self.streams = {"stdout": _Stream(self, "stdout"), "stderr": _Stream(self, "stderr")}

    def begin(self):
        self.items, self.size, self.cut = [], 0, False
        self.saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = self.streams["stdout"], self.streams["stderr"]

    def _keep(self, item: dict, size: int) -> bool:
        if self.size + size > self.limit:
            if not self.cut:
                self.cut = True
                self.items.append({"output_type": "stream", "name": "stdout", "text": OUTPUT_CUT})
            return False
        self.size += size
        self.items.append(item)
        return True

    def write(self, name, text):
        text = text if type(text) is str else str(text)
        if type(text) is not str:
            return 0
        last = self.items[-1] if self.items else None
        if last and last.get("name") == name and last["output_type"] == "stream" and not self.cut:
            if self.size + len(text) <= self.limit:
                last["text"] += text
                self.size += len(text)
                return len(text)
        self._keep({"output_type": "stream", "name": name, "text": str(text)}, len(text))
        return len(text)

    def result(self, value):
        text = repr(value)
        if type(text) is str:
            self._keep({"output_type": "execute_result", "data": {"text/plain": text}, "metadata": {},
                        "execution_count": None}, len(text))

    def error(self, error, described: str):
        lines = None
        try:
            render = getattr(error, "_render_traceback_", None)
            if render is not None:  # as IPython does: the course's checks print one line, not a stack
                lines = [line for line in render() if type(line) is str]
            else:
                import traceback
                shown = traceback.TracebackException.from_exception(error)
                shown.stack = traceback.StackSummary.from_list(  # without run_cell's own frame
                    [frame for frame in shown.stack if frame.filename != __file__])
                lines = list(shown.format())
        except BaseException:  # noqa: BLE001 - a traceback that can't be formatted: its one line will do
            lines = None
        name, _, value = described.partition(": ")
        self.items.append({"output_type": "error", "ename": name, "evalue": value,
                           "traceback": [str(line) for line in (lines or [described])][-60:]})

    def figures(self):
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is None:
            return
        import base64
        import io
        for number in pyplot.get_fignums():
            buffer = io.BytesIO()
            pyplot.figure(number).savefig(buffer, format="png", bbox_inches="tight")
            data = base64.b64encode(buffer.getvalue()).decode()
            self._keep({"output_type": "display_data", "data": {"image/png": data, "text/plain": "<Figure>"},
                        "metadata": {}}, len(data))
        pyplot.close("all")

    def end(self) -> list:
        try:
            self.figures()
        except BaseException as error:  # noqa: BLE001 - a figure that won't draw costs its picture only
            self.write("stderr", f"[a figure could not be drawn: {describe(error)}]\n")
        finally:
            sys.stdout, sys.stderr = self.saved
        items, self.items = self.items, []
        return [_plain(item) for item in items]


def _plain(value):
    """A copy made of exact dicts, lists and strs only (what the record's JSON may hold)."""
    if type(value) is dict:
        return {str.__str__(k): _plain(v) for k, v in value.items() if type(k) is str}
    if type(value) is list:
        return [_plain(v) for v in value]
    if type(value) is str or value is None or type(value) in (int, float, bool):
        return value
    return "<dropped>"


def describe(error) -> str:
    """'TypeError: ...' for an exception of the notebook's: always a non-empty str, whatever it does."""
    try:
        text = f"{type.__dict__['__name__'].__get__(type(error))}: {error}"
    except BaseException:  # noqa: BLE001 - an exception whose name or str() itself fails
        text = ""
    return text[:2000] if type(text) is str and text.strip(": ") else "an exception that cannot be printed"


def _sign_once(key, fd: int, body: dict) -> None:
    """The one record written before the hook exists: the clean room could not be built."""
    import hashlib
    import hmac
    if key is None:
        return
    text = json.dumps({**body, "seq": 0}, sort_keys=True)
    os.write(fd, f"{hmac.new(key, text.encode(), hashlib.sha256).hexdigest()} {text}\n".encode())


def all_changes(module_changes, shell, library_dirs: tuple):
    """changes() -> what the course's watcher and the stand-in shell report."""
    shell_before, class_before = dict(vars(shell)), dict(vars(Shell))

    def changes() -> list:
        return module_changes() + shell_changes(shell, shell_before, class_before, library_dirs)

    return changes


# -- the fork server ------------------------------------------------------------------------------------
def serve(sock_fd: int) -> None:
    """A fork server (one per grading worker): import what grading needs once, then for each job the
    worker sends (its cells and key, with the verdict pipe's write end), fork a child that builds the
    clean room and runs it. The server itself runs no notebook code and holds no key between jobs.

    Inside the grading namespaces it is PID 1: a cell can neither signal it (init ignores signals it
    has no handler for) nor outlive its job (every other process of the namespace is killed after each).
    Outside them it is a child subreaper, and kills every process left under it."""
    import signal
    import socket
    import struct
    sock = socket.socket(fileno=sock_fd)
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(number, signal.SIG_DFL)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1):
        os.dup2(null, fd)
    first = _receive(sock, struct)
    if first is None:
        return
    setup, _ = first
    for path in reversed(setup["path"]):
        sys.path.insert(0, path)
    sys.dont_write_bytecode = True
    _subreaper()
    try:
        from graders import _integrity
        _integrity.load_course(setup["preload"])
        import IPython.core.inputtransformer2  # noqa: F401
        import IPython.display  # noqa: F401
        _settle()
        _reply(sock, {"ready": True})
    except BaseException as error:  # noqa: BLE001 - tell the worker, which reports it
        _reply(sock, {"ready": False, "error": f"{type(error).__name__}: {error}"})
        return
    while True:
        received = _receive(sock, struct)
        if received is None:
            return
        job, fds = received
        if "warm" in job:  # the course's libraries for an assignment (the worker's list, never a submission's)
            try:
                _integrity.load_course(job["warm"])
                _settle()
                _reply(sock, {"warmed": True})
                continue
            except BaseException as error:  # noqa: BLE001 - tell the worker, which starts a server without them
                _reply(sock, {"warmed": False, "error": f"{type(error).__name__}: {error}"})
                return
        if not fds:
            _reply(sock, {"exit": None, "error": "no verdict pipe"})
            continue
        pid = os.fork()
        if pid == 0:
            sock.close()
            os.setsid()
            try:
                child(job, fds[0])
            finally:
                os._exit(5)
        os.close(fds[0])
        del job
        _reply(sock, {"started": True, "pid": pid})
        status = os.waitpid(pid, 0)[1]
        _clear_leftovers(pid)
        _reply(sock, {"exit": os.waitstatus_to_exitcode(status)})


def _settle() -> None:
    """After the server imports: check CUDA is untouched, and put what was imported out of the collector's sight."""
    import torch
    if torch.cuda.is_initialized():
        raise RuntimeError("CUDA was initialized while importing: the fork server's children could not use it")
    # What was imported lives as long as the server: out of the collector's sight, a full collection in a
    # child walks only the notebook's own objects (0.4 s -> microseconds with transformers loaded, and
    # graders collect after each model they load), and never writes to, so never copies, the shared pages.
    gc.collect()
    gc.freeze()


def _subreaper() -> None:
    """Orphans of a job become this server's children (not init's), so they can be found and killed."""
    if os.getpid() == 1:
        return
    try:
        import ctypes
        ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass


def _clear_leftovers(pid: int) -> None:
    """Kill whatever the job left running (a daemon it started, a fork), then reap it."""
    import signal
    if os.getpid() == 1:
        try:
            os.kill(-1, signal.SIGKILL)  # from init: every other process of the namespace
        except ProcessLookupError:
            pass
        for name in os.listdir("/dev/shm"):  # the namespace's own tmpfs: nothing passes to the next notebook
            path = os.path.join("/dev/shm", name)
            try:
                if os.path.isdir(path) and not os.path.islink(path):
                    import shutil
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    os.unlink(path)
            except OSError:
                pass
    else:
        for _ in range(3):
            children = _children()
            if not children:
                break
            for child_pid in children:
                try:
                    os.kill(child_pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.01)
    while True:
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                time.sleep(0.01)
                if not _children():
                    break
        except ChildProcessError:
            break


def _children() -> list:
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="utf-8") as stat:
                    if int(stat.read().rsplit(")", 1)[1].split()[1]) == me:
                        found.append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    return found


def _receive(sock, struct):
    """One message from the worker: (JSON, file descriptors), or None when the worker has gone."""
    import socket
    try:
        head, fds, _, _ = socket.recv_fds(sock, 4, 4)
        if len(head) < 4:
            return None
        size = struct.unpack("!I", head)[0]
        data = b""
        while len(data) < size:
            chunk = sock.recv(min(size - len(data), 1 << 20))
            if not chunk:
                return None
            data += chunk
        return json.loads(data), list(fds)
    except (OSError, ValueError):
        return None


def _reply(sock, message: dict) -> None:
    sock.sendall(json.dumps(message).encode() + b"\n")


if __name__ == "__main__":
    serve(int(sys.argv[1]))
