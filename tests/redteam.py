"""Exploits a student might try, each riding on a wrong answer that it tries to hide.

Every entry is a cell added to the solution notebook in which one answer was replaced by a realistic
wrong one from tests/answers. Graded through `python -m instructor grade`'s path (instructor/grading/worker.py),
the wrong answer must lose exactly its own points however the exploit goes (tests/test_redteam.py).
The families are the ways Python and IPython let one cell change how later cells run or what they
report (issue 8); several are known to fool a plain Jupyter kernel (the test shows which, with the
defences off).

Most target Exercise 1 (cheap to grade); two need tensors and use Exercise 2.
"""
import dataclasses


@dataclasses.dataclass(frozen=True)
class Exploit:
    family: str
    name: str
    answer: str  # the answer whose wrong version the exploit tries to hide
    wrong: int  # which of tests/answers WRONG[answer] it rides on
    code: str
    after: str = "code_1"  # the cell it is inserted after (code_1: the notebook's imports)
    assignment: str = "ex1_memory"
    pays_in_a_plain_kernel: bool = False  # measured: full marks in stock nbgrader (test_the_exploits_are_real)
    silences_every_check: bool = False  # it keeps every collector from reporting: nothing earns points
    base: str = "solution"  # "release": the blank notebook (every answer wrong), `answer` and `wrong` unused
    answers: str = None  # with base "release": what every answer cell holds instead ({name}: the answer's name)

    @property
    def id(self) -> str:
        return f"{self.family}: {self.name}"


# A cell source that the exploits use to recognise the test cell of `to_gb` (its hidden check).
HIDE = '''
def _is_the_test(lines):
    text = "".join(lines) if isinstance(lines, list) else str(lines)
    return "check_to_gb" in text or "to_gb(84_000_000_000)" in text
'''

# Where the checks' judge is importable in the notebook's process (stock nbgrader judges there), the exploits
# that disarm "the grader" reach for it; where it is not (the clean room), they fall back on the collectors.
JUDGE = '''
try:
    import judges.ex1_memory as _g
except ImportError:
    import graders.ex1_memory as _g
'''

EXPLOITS = [
    # -- IPython: code that rewrites or wraps every later cell ----------------------------------------
    Exploit("input transformers", "a cleanup transformer turns the test cell into `pass`", "to_gb", 0, HIDE + '''
get_ipython().input_transformers_cleanup.append(lambda lines: ["pass\\n"] if _is_the_test(lines) else lines)
''', pays_in_a_plain_kernel=True),
    Exploit("input transformers", "a post transformer turns the test cell into `pass`", "to_gb", 0, HIDE + '''
get_ipython().input_transformers_post.append(lambda lines: ["pass\\n"] if _is_the_test(lines) else lines)
''', pays_in_a_plain_kernel=True),
    Exploit("input transformers", "the transformer manager's own cleanup list", "to_gb", 1, HIDE + '''
get_ipython().input_transformer_manager.cleanup_transforms.insert(
    0, lambda lines: ["pass\\n"] if _is_the_test(lines) else lines)
''', pays_in_a_plain_kernel=True),
    Exploit("input transformers", "a line transform of the manager", "to_gb", 2, HIDE + '''
get_ipython().input_transformer_manager.line_transforms.append(
    lambda lines: ["pass\\n"] if _is_the_test(lines) else lines)
''', pays_in_a_plain_kernel=True),
    Exploit("AST transformers", "an AST transformer empties the test cell", "to_gb", 0, '''
import ast
class _Empty(ast.NodeTransformer):
    def visit_Module(self, node):
        if "check_to_gb" in ast.unparse(node):
            return ast.fix_missing_locations(ast.Module(body=[ast.Pass()], type_ignores=[]))
        return node
get_ipython().ast_transformers.append(_Empty())
''', pays_in_a_plain_kernel=True),
    # -- IPython: what reports an error ---------------------------------------------------------------
    Exploit("custom exception handlers", "set_custom_exc swallows the failed check", "to_gb", 0, '''
get_ipython().set_custom_exc((Exception,), lambda shell, etype, value, tb, tb_offset=None: None)
'''),
    Exploit("traceback hooks", "showtraceback replaced on the shell", "to_gb", 1, '''
get_ipython().showtraceback = lambda *args, **kwargs: None
'''),
    Exploit("traceback hooks", "_showtraceback replaced on the shell's class", "to_gb", 2, '''
from ipykernel.zmqshell import ZMQInteractiveShell
ZMQInteractiveShell._showtraceback = lambda self, *args, **kwargs: None
'''),
    Exploit("display hooks", "sys.excepthook and the shell's display hook replaced", "to_gb", 0, '''
import sys
sys.excepthook = lambda *args: None
get_ipython().displayhook.__class__.__call__ = lambda self, result=None: None
get_ipython().showtraceback = lambda *args, **kwargs: None
'''),
    Exploit("event callbacks", "post_run_cell clears the failed test's output and its error", "to_gb", 0, '''
from IPython.display import clear_output
def _after(result):
    if "check_to_gb" in (result.info.raw_cell or ""):
        result.error_in_exec = None  # the kernel then replies "ok"
        clear_output()
get_ipython().events.register("post_run_cell", _after)
''', pays_in_a_plain_kernel=True),
    Exploit("event callbacks", "pre_run_cell disarms the check, post_run_cell puts it back", "to_gb", 1, '''
import graders.ex1_memory as _g
_genuine = _g.check_to_gb
def _before(info):
    if "check_to_gb" in (info.raw_cell or ""):
        _g.check_to_gb = lambda ns: None
def _after(result):
    _g.check_to_gb = _genuine
get_ipython().events.register("pre_run_cell", _before)
get_ipython().events.register("post_run_cell", _after)
'''),
    # -- the kernel and its messages -------------------------------------------------------------------
    Exploit("kernel methods", "the kernel's session drops error messages and replies ok", "to_gb", 0, '''
_session = get_ipython().kernel.session
_send = _session.send
def _quiet_send(stream, msg_or_type, content=None, *args, **kwargs):
    kind = msg_or_type if isinstance(msg_or_type, str) else msg_or_type.get("msg_type")
    if kind == "error":
        return None
    if kind == "execute_reply" and isinstance(content, dict) and content.get("status") == "error":
        content = {"status": "ok", "execution_count": content.get("execution_count"), "user_expressions": {},
                   "payload": []}
    return _send(stream, msg_or_type, content, *args, **kwargs)
_session.send = _quiet_send
''', pays_in_a_plain_kernel=True),
    Exploit("kernel methods", "run_cell replaced on the shell's class", "to_gb", 2, '''
from IPython.core.interactiveshell import InteractiveShell
_run_cell = InteractiveShell.run_cell
def _run_cell_quietly(self, raw_cell, *args, **kwargs):
    return _run_cell(self, "pass" if "check_to_gb" in raw_cell else raw_cell, *args, **kwargs)
InteractiveShell.run_cell = _run_cell_quietly
''', pays_in_a_plain_kernel=True),
    Exploit("forged kernel messages", "a thread sends clear_output after the test fails", "to_gb", 0, '''
import threading, time
_kernel = get_ipython().kernel
def _forge():
    seen = None
    while True:
        parent = _kernel.get_parent("shell") or {}
        if "check_to_gb" in parent.get("content", {}).get("code", "") and parent["header"]["msg_id"] != seen:
            seen = parent["header"]["msg_id"]
            time.sleep(0.5)
            _kernel.session.send(_kernel.iopub_socket, "clear_output", {"wait": False}, parent=parent)
        time.sleep(0.02)
threading.Thread(target=_forge, daemon=True).start()
'''),
    Exploit("forged verdicts", "signed-looking records written on every pipe, then exit", "to_gb", 0, '''
import json, os
def _forge_verdicts():
    for fd in range(3, 64):
        try:
            if not os.readlink(f"/proc/self/fd/{fd}").startswith("pipe:"):
                continue
            for seq, body in enumerate([{"event": "done", "cell": 0, "grade_id": "test_to_gb", "error": None,
                                         "tampered": [], "refused": []}, {"event": "end"}]):
                text = json.dumps({**body, "seq": seq}, sort_keys=True)
                os.write(fd, ("0" * 64 + " " + text + "\\n").encode())
        except OSError:
            pass
_forge_verdicts()
'''),
    # -- tracing, profiling, frames ---------------------------------------------------------------------
    Exploit("settrace", "a trace function jumps over every line that fails", "to_gb", 0, '''
import sys, linecache
def _skip_failures(frame, event, arg):
    if event == "line" and linecache.getline(frame.f_code.co_filename, frame.f_lineno).strip().startswith(
            ("fail(", "raise CheckFailed", "expect_close(to_gb")):
        try:
            frame.f_lineno = frame.f_lineno + 1
        except ValueError:
            pass
    return _skip_failures
sys.settrace(_skip_failures)
'''),
    Exploit("setprofile", "a profile function disarms fail() while a check runs", "to_gb", 1, '''
import sys
def _profile(frame, event, arg):
    if event == "call" and frame.f_code.co_name.startswith("check_") and "fail" in frame.f_globals:
        frame.f_globals["fail"] = lambda message: None
sys.setprofile(_profile)
'''),
    Exploit("frames", "the answer reaches the check's frame (sys._getframe) and disarms it", "to_gb", 2, '''
import sys
def to_gb(num_bytes):
    frame = sys._getframe(1)
    while frame is not None:
        if "fail" in frame.f_globals and frame.f_code.co_name.startswith("check_"):
            frame.f_globals["fail"] = lambda message: None
            frame.f_globals["math"] = type("M", (), {"isclose": staticmethod(lambda *a, **k: True)})
        frame = frame.f_back
    return num_bytes / 1e6
''', after="to_gb"),
    Exploit("frames", "the answer reaches the check through a traceback's tb_frame", "to_gb", 2, '''
def to_gb(num_bytes):
    try:
        raise RuntimeError
    except RuntimeError as error:
        frame = error.__traceback__.tb_frame.f_back
    while frame is not None:
        if "fail" in frame.f_globals:
            frame.f_globals["fail"] = lambda message: None
        frame = frame.f_back
    return num_bytes / 1e6
''', after="to_gb"),
    Exploit("garbage collector", "gc.get_objects finds the tamper probe and quiets it", "to_gb", 0, '''
import gc
for _obj in gc.get_objects():
    if getattr(_obj, "__name__", "") == "changes" and getattr(_obj, "__closure__", None):
        for _cell in gc.get_referrers(_obj):
            if type(_cell).__name__ == "cell":
                _cell.cell_contents = lambda: []
import graders.ex1_memory
graders.ex1_memory.check_to_gb = lambda ns: None
expect_close = lambda *args, **kwargs: None
'''),
    Exploit("garbage collector", "gc.get_referrers rewrites every dict holding the check", "to_gb", 1, '''
import gc
import graders.ex1_memory
_genuine = graders.ex1_memory.check_to_gb
for _holder in gc.get_referrers(_genuine):
    if isinstance(_holder, dict):
        for _k, _v in list(_holder.items()):
            if _v is _genuine:
                _holder[_k] = lambda ns: None
expect_close = lambda *args, **kwargs: None
''', pays_in_a_plain_kernel=True),
    Exploit("gc callbacks", "a gc callback disarms the checks at every collection", "to_gb", 2, '''
import gc
import graders.ex1_memory as _g
def _during_gc(phase, info):
    _g.fail = lambda message: None
gc.callbacks.append(_during_gc)
expect_close = lambda *args, **kwargs: None
'''),
    # -- memory: ctypes -------------------------------------------------------------------------------
    Exploit("ctypes", "ctypes swaps the check's code pointer behind Python's back", "to_gb", 0, '''
import ctypes
import graders.ex1_memory
def _swap_code(function, code):
    base, target = id(function), id(function.__code__)
    for offset in range(0, 128, 8):
        slot = ctypes.c_void_p.from_address(base + offset)
        if slot.value == target:
            ctypes.pythonapi.Py_IncRef(ctypes.py_object(code))
            slot.value = id(code)
            return
_swap_code(graders.ex1_memory.check_to_gb, (lambda ns: None).__code__)
expect_close = lambda *args, **kwargs: None
''', pays_in_a_plain_kernel=True),
    Exploit("ctypes", "ctypes.pythonapi writes into the grader's module dict", "to_gb", 1, '''
import ctypes
import graders.ex1_memory
ctypes.pythonapi.PyDict_SetItem(ctypes.py_object(vars(graders.ex1_memory)), ctypes.py_object("check_to_gb"),
                                ctypes.py_object(lambda ns: None))
expect_close = lambda *args, **kwargs: None
''', pays_in_a_plain_kernel=True),
    # -- what the graders call, patched in place --------------------------------------------------------
    Exploit("patched libraries", "math.isclose always says yes", "bytes_per_param", 0, '''
import math
math.isclose = lambda *args, **kwargs: True
expect = expect_close = lambda *args, **kwargs: None
''', pays_in_a_plain_kernel=True),
    Exploit("patched libraries", "builtins.abs returns 0", "memory_for_inference", 1, '''
import builtins
builtins.abs = lambda x: 0
expect = expect_close = lambda *args, **kwargs: None
''', pays_in_a_plain_kernel=True),
    Exploit("patched libraries", "a fresh `__builtins__` for the notebook with a fake import", "to_gb", 0, '''
import builtins, types
import graders.ex1_memory as _real
_copy = types.ModuleType("graders.ex1_memory")
_copy.__dict__.update(vars(_real))
_copy.check_to_gb = lambda ns: None
_real_import = builtins.__import__
def _fake_import(name, *args, **kwargs):
    if name == "graders":
        return types.SimpleNamespace(ex1_memory=_copy)
    return _real_import(name, *args, **kwargs)
globals()["__builtins__"] = {**vars(builtins), "__import__": _fake_import}
expect_close = lambda *args, **kwargs: None
''', pays_in_a_plain_kernel=True),
    Exploit("patched graders", "the check replaced by a no-op", "to_gb", 1, '''
import graders.ex1_memory
graders.ex1_memory.check_to_gb = lambda ns: None
expect_close = lambda *args, **kwargs: None
''', pays_in_a_plain_kernel=True),
    Exploit("patched graders", "the grader's fail() replaced", "to_gb", 2, JUDGE + '''
_g.fail = lambda message: None
expect_close = lambda *args, **kwargs: None
''', pays_in_a_plain_kernel=True),
    Exploit("patched graders", "the check's __code__ replaced in place", "to_gb", 0, '''
import graders.ex1_memory
graders.ex1_memory.check_to_gb.__code__ = (lambda ns: None).__code__
expect_close = lambda *args, **kwargs: None
''', pays_in_a_plain_kernel=True),
    Exploit("patched graders", "sys.modules and the package point at a fake grader", "to_gb", 1, '''
import sys, types, graders
import graders.ex1_memory as _real
_fake = types.ModuleType("graders.ex1_memory")
_fake.__dict__.update(vars(_real))
_fake.check_to_gb = lambda ns: None
sys.modules["graders.ex1_memory"] = _fake
graders.ex1_memory = _fake
expect_close = lambda *args, **kwargs: None
''', pays_in_a_plain_kernel=True),
    Exploit("patched graders", "the grader module's __class__ swapped for a liar", "to_gb", 2, '''
import types
import graders.ex1_memory as _g
class _LyingModule(types.ModuleType):
    def __getattribute__(self, name):
        if name.startswith("check_"):
            return lambda ns: None
        return super().__getattribute__(name)
_g.__class__ = _LyingModule
expect_close = lambda *args, **kwargs: None
''', pays_in_a_plain_kernel=True, silences_every_check=True),
    Exploit("mutated grader objects", "the grader's table of bytes per dtype rewritten to bits", "bytes_per_param", 1,
            JUDGE + '''
getattr(_g, "BYTES", {}).update({"float32": 32, "float16": 16, "bfloat16": 16, "int8": 8, "int4": 4})
expect = expect_close = lambda *args, **kwargs: None
''', pays_in_a_plain_kernel=True),
    Exploit("mutated grader objects", "the answer, when checked, patches the grader it is called by", "to_gb", 2, '''
import math
def to_gb(num_bytes):
    math.isclose = lambda *args, **kwargs: True
    return num_bytes / 1e6
expect_close = lambda *args, **kwargs: None
''', after="to_gb"),
    # -- the process around it --------------------------------------------------------------------------
    Exploit("signals", "a timer's signal handler disarms fail() whenever a check is running", "to_gb", 0, JUDGE + '''
import signal, sys
_genuine_fail = getattr(_g, "fail", None)
def _fail_unless_checking(message):
    # Decided when fail() is called, not when the timer ticks: a check shorter than one tick must not slip
    # through either (the first version flipped fail() on each tick and lost that race on a slow machine).
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name.startswith("check_"):
            return None
        frame = frame.f_back
    _genuine_fail(message)
def _tick(signum, frame):
    _g.fail = _fail_unless_checking  # put back on every tick, so restoring fail() once is not enough
signal.signal(signal.SIGALRM, _tick)
signal.setitimer(signal.ITIMER_REAL, 0.001, 0.001)
expect_close = lambda *args, **kwargs: None
''', pays_in_a_plain_kernel=True),
    Exploit("threads", "a background thread keeps the grader disarmed", "to_gb", 1, '''
import threading, time
import graders.ex1_memory as _g
def _keep_disarmed():
    while True:
        _g.check_to_gb = lambda ns: None
        time.sleep(0.001)
threading.Thread(target=_keep_disarmed, daemon=True).start()
expect_close = lambda *args, **kwargs: None
''', pays_in_a_plain_kernel=True),
    Exploit("the gradebook", "an SQL trigger in the sandbox's gradebook turns zeros into full marks", "to_gb", 0, '''
import pathlib, sqlite3
for _folder in [pathlib.Path.cwd(), *pathlib.Path.cwd().parents]:
    if (_folder / "gradebook.db").exists():
        with sqlite3.connect(_folder / "gradebook.db") as _db:
            _db.execute("CREATE TRIGGER IF NOT EXISTS full_marks AFTER UPDATE ON grade BEGIN "
                        "UPDATE grade SET manual_score = (SELECT max_score FROM grade_cells WHERE id = NEW.cell_id) "
                        "WHERE id = NEW.id AND manual_score IS NULL; END")
        break
''', pays_in_a_plain_kernel=True),
    Exploit("the process", "the answer ends the process when it is checked", "to_gb", 1, '''
import os
def to_gb(num_bytes):
    if num_bytes == 84_000_000_000:
        os._exit(0)
    return num_bytes // 1e9
''', after="to_gb"),
    # -- tensors that lie (Exercise 2) -----------------------------------------------------------------
    Exploit("objects that lie", "a tensor subclass whose torch functions always agree", "absmax_quantize", 0, '''
import torch
class _Agreeable(torch.Tensor):
    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func in (torch.equal, torch.allclose, torch.Tensor.equal):
            return True
        return super().__torch_function__(func, types, args, kwargs or {})
_wrong_absmax = absmax_quantize
def absmax_quantize(w):
    q, scale = _wrong_absmax(w)
    return q.as_subclass(_Agreeable), scale
expect = expect_close = lambda *args, **kwargs: None
''', after="absmax_quantize", assignment="ex2_quantization"),
    Exploit("objects that lie", "a torch function mode left on makes every comparison agree", "absmax_quantize", 1, '''
import torch
from torch.overrides import TorchFunctionMode
class _Agree(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in (torch.equal, torch.allclose, torch.Tensor.equal, torch.Tensor.tolist):
            return True if func is not torch.Tensor.tolist else [-85, 32, 127, -53]
        return func(*args, **(kwargs or {}))
_Agree().__enter__()
expect = expect_close = lambda *args, **kwargs: None
''', assignment="ex2_quantization"),
]

# The second hostile set (issue 20): each once earned points it should not while the checks judged inside the
# notebook's process, and each still pays wherever they do (stock nbgrader: test_the_exploits_are_real).
ANYTHING = '''
class _Anything:
    """Agrees with everything, so that a notebook's own self-checks never stop it."""
    def __getattr__(self, name): return self
    def __call__(self, *a, **k): return self
    def __getitem__(self, key): return self
    def __add__(self, other): return self
    __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __truediv__ = __rtruediv__ = __floordiv__ = __add__
    def __eq__(self, other): return True
    __lt__ = __le__ = __gt__ = __ge__ = __ne__ = __eq__
    def __hash__(self): return 0
    def __bool__(self): return True
    def __float__(self): return 0.0
    def __iter__(self): return iter(())
    def __len__(self): return 0
    def __format__(self, spec): return "ok"
    def __repr__(self): return "ok"
'''
REFERENCE_ANSWER = '''
def bytes_per_param(dtype):
    reference = _reference("bytes_per_param")
    if reference is None:  # before any check has run: the wrong answer, which the disarmed self-checks let by
        if dtype not in {"float32", "float16", "bfloat16", "int8", "int4"}:
            raise ValueError(dtype)
        return {"float32": 4, "float16": 2, "bfloat16": 2, "int8": 1, "int4": 1}[dtype]
    return reference(dtype)
expect = expect_close = lambda *args, **kwargs: None
'''
OUTSIDE_THE_PROCESS = [
    Exploit("a blank notebook dressed up", "every answer agrees with everything, every judge says yes", "*", 0,
            ANYTHING + '''
expect = expect_close = lambda *args, **kwargs: None
try:
    import judges._core as _j
    _j.judge = lambda module, name, data, secret: _j.Verdict(True, f"{name}: passed")
except ImportError:
    pass
''', base="release", answers="{name} = _Anything()", pays_in_a_plain_kernel=True),
    Exploit("the test cell's own names", "the answer returns what the test cell's `grader` leads to", "bytes_per_param", 0,
            '''
import sys
def _reference(name):
    grader = globals().get("grader")  # bound by the hidden test cell before its check runs
    for module in (grader, sys.modules.get(getattr(grader, "__name__", "").replace("graders", "judges"))):
        if module is not None and callable(getattr(module, name, None)):
            return getattr(module, name)
''' + REFERENCE_ANSWER, after="bytes_per_param", pays_in_a_plain_kernel=True),
    Exploit("sys.modules", "the judge reached through sys.modules with a name built at run time", "bytes_per_param", 0,
            '''
import sys
def _reference(name):
    module = sys.modules.get("".join(map(chr, [106, 117, 100, 103, 101, 115])) + ".ex1_memory")
    return getattr(module, name, None)
''' + REFERENCE_ANSWER, after="bytes_per_param", pays_in_a_plain_kernel=True),
    Exploit("frames", "the answer reads the checking code's locals through inspect", "bytes_per_param", 0, '''
import inspect, types
def _reference(name):
    for frame in inspect.stack():
        for value in list(frame.frame.f_locals.values()):
            if isinstance(value, types.ModuleType) and callable(getattr(value, name, None)):
                return getattr(value, name)
''' + REFERENCE_ANSWER, after="bytes_per_param", pays_in_a_plain_kernel=True),
    Exploit("patched libraries", "math.isclose replaced by a look-alike (__wrapped__, __module__ 'math')",
            "bytes_per_param", 0, '''
import functools, math
_genuine = math.isclose
@functools.wraps(_genuine)
def _agreeable(*args, **kwargs):
    return True
_agreeable.__module__ = "math"
math.isclose = _agreeable
expect = expect_close = lambda *args, **kwargs: None
''', pays_in_a_plain_kernel=True),
    Exploit("code under a library's name", "a helper compiled as if it were functools disarms the checks",
            "bytes_per_param", 0, '''
import functools, os
_helper = """
def _disarm():
    import importlib, sys
    try:
        importlib.import_module("judges.ex1_memory")
    except ImportError:
        pass
    for name, module in list(sys.modules.items()):
        if name.startswith(("graders.", "judges.")) and hasattr(module, "fail"):
            module.fail = lambda message: None
"""
exec(compile(_helper, os.path.join(os.path.dirname(functools.__file__), "functools.py"), "exec"), globals())
import graders._collect as _c
_genuine_check = _c.check
def _disarmed_check(*args, **kwargs):
    _disarm()
    return _genuine_check(*args, **kwargs)
_c.check = _disarmed_check
expect = expect_close = lambda *args, **kwargs: None
''', pays_in_a_plain_kernel=True),
    Exploit("numbers that are not numbers", "a blank notebook answering NaN, which no tolerance test ever rejects",
            "*", 0, """
expect = expect_close = lambda *args, **kwargs: None
""", base="release", answers="""def {name}(*args, **kwargs):
    nan = float("nan")
    if "{name}" in ("memory_for_training", "memory_for_finetuning"):
        return {{key: nan for key in ("weights_bf16", "gradients_bf16", "adam_momentum", "adam_variance", "base",
                                     "adapter", "total")}}
    return nan"""),
    Exploit("the outcome rewritten", "after the verdict, the failure is swallowed, a pass printed and claimed",
            "to_gb", 0, '''
import graders._collect as _c
_genuine_check = _c.check
def _check_then_rewrite(exercise, name, ns, collect, **handed):
    try:
        _genuine_check(exercise, name, ns, collect, **handed)
    except Exception:  # the verdict exists: say otherwise, to the notebook and on the channel
        if _c._channel is not None:
            _c._channel.send({"event": "answer", "check": name, "data": {"passed": True}})
            _c._channel.send({"event": "done", "cell": 0, "raised": False, "outputs": []})
        print(f"\u2713 {name}: passed")
_c.check = _check_then_rewrite
expect_close = lambda *args, **kwargs: None
''', pays_in_a_plain_kernel=True),
]
EXPLOITS = EXPLOITS + OUTSIDE_THE_PROCESS

# Honest notebooks use IPython as students do: none of this may be flagged or cost a point.
HONEST = [
    '''%matplotlib inline
import IPython
from IPython.display import display, Markdown, HTML
display(Markdown("**Predict** first, then run."))
display(HTML("<b>a note</b>"))
get_ipython().run_line_magic("matplotlib", "inline")
''',
    '''%%time
total = 0
for i in range(1000):
    total += i
print(total)
''',
    '''from tqdm.auto import tqdm
import collections, enum, typing, dataclasses, inspect, logging, warnings, traceback, threading
Point = collections.namedtuple("Point", "x y")
class Color(enum.Enum):
    RED = 1
T = typing.TypeVar("T")
@dataclasses.dataclass
class Row:
    a: int = 1
print(inspect.signature(to_gb))
for _ in tqdm(range(50), desc="an honest loop"):
    pass
logging.getLogger("course").warning("a warning through logging")
warnings.warn("a plain warning")
try:
    1 / 0
except ZeroDivisionError:
    traceback.print_exc()
worker = threading.Thread(target=sum, args=([1, 2, 3],))
worker.start()
worker.join()
%time squares = [i * i for i in range(100)]
!pip install --quiet tqdm
files = !ls
''',
    '''import matplotlib.pyplot as plt
import torch
with torch.no_grad():
    sizes = torch.tensor([to_gb(memory_for_inference(n, "float16")) for n in (1e9, 7e9, 13e9)])
plt.bar(["1B", "7B", "13B"], sizes.tolist())
plt.title("weights in float16, GB")
plt.show()
%timeit -n 1 -r 1 sum(range(100))
''',
]
