"""Tamper detection: what grading relies on, compared after every cell with how it was before the first.

`watcher()` snapshots what the graders lean on and returns `changes()`, which lists what has been
replaced or added since: a grader function or constant, a course class, `torch.allclose`,
`math.isclose`, a builtin, an entry of sys.modules, a method of `torch.Tensor`; a trace or profile
function; a torch function or dispatch mode left on, a tensor subclass defined outside installed code;
and, under IPython, every hook through which a cell can change how later cells run or what they
report (input, cleanup and AST transformers, custom exception handlers, display and exception hooks,
event callbacks, methods of the shell, the kernel, its session and display publisher).

Two places use it. The clean room (instructor/grading/cleanroom.py), whose verdict is the grade, calls
it directly. The Jupyter kernel that produces the notebook students see in feedback is probed through
`arm(key, preload)` before any cell and `probe(nonce)` after each (instructor/grading/kernel.py):
there `probe` signs its answer with the key, so a notebook that swaps `probe` out cannot answer for it.

`changes` is a closure over everything it uses (the watched namespaces, the objects they held, the
types it compares against), and it checks the builtins first with plain operators before calling
any of them: patching this module, `inspect`, `json` or `hmac` afterwards cannot make it say "clean".
In the kernel it is no defence against code written to read the key out of the closure, which is why
the kernel's run is not what grades (docs/grading.md, threat model).
"""
import builtins
import functools
import hashlib
import hmac
import importlib
import math
import os
import pkgutil
import random
import sys
import sysconfig
import threading
import types

# Modules whose functions, classes and constants must stay exactly as loaded (the course's own code).
EXACT_PACKAGES = ("graders", "utils")
# Names IPython and ipykernel rebind in builtins while they run cells.
IPYTHON_BUILTINS = frozenset({"_", "__", "___", "exit", "quit", "get_ipython", "display", "__IPYTHON__",
                              "__builtins__", "help", "copyright", "credits", "license", "dreload", "__debug__",
                              "input", "raw_input"})
COMPILED = (types.BuiltinFunctionType, types.WrapperDescriptorType, types.MethodDescriptorType,
            types.MethodWrapperType, types.ClassMethodDescriptorType, types.GetSetDescriptorType,
            types.MemberDescriptorType)
PLAIN = (int, float, complex, str, bytes, bool, type(None))
# IPython's lists of code that rewrites or wraps every later cell: nothing may be added to them.
SHELL_HOOK_LISTS = ("input_transformers_cleanup", "input_transformers_post", "ast_transformers")
MANAGER_HOOK_LISTS = ("cleanup_transforms", "line_transforms", "token_transformers")


def _ipython_objects() -> list:
    """(label, object) for the IPython shell and the kernel around it, when there is one."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    if shell is None or not hasattr(shell, "input_transformer_manager"):  # none, or the clean room's stand-in
        return []
    found = [("shell", shell), ("shell.events", shell.events), ("shell.displayhook", shell.displayhook),
             ("shell.display_pub", shell.display_pub), ("shell.display_formatter", shell.display_formatter),
             ("shell.compile", shell.compile), ("shell.InteractiveTB", shell.InteractiveTB),
             ("shell.SyntaxTB", shell.SyntaxTB), ("shell.input_transformer_manager", shell.input_transformer_manager)]
    kernel = getattr(shell, "kernel", None)
    if kernel is not None:
        found += [("kernel", kernel), ("kernel.session", kernel.session)]
    return found


def _watched():
    """(label, namespace, exact?, report added names?) for everything the graders lean on."""
    import numpy
    import torch
    import torch.nn.functional
    import torch.testing
    course = [(name, module) for name, module in sorted(sys.modules.items())
              if isinstance(module, types.ModuleType) and name.split(".")[0] in EXACT_PACKAGES]
    spaces = [(name, vars(module), True, False) for name, module in course]
    for name, module in course:  # a course class patched in place (graders' reference LoRALinear, say)
        for attr, value in list(vars(module).items()):
            if isinstance(value, type) and value.__module__ == name:
                spaces.append((f"{name}.{attr}", vars(value), True, True))
    for label, module in [("torch", torch), ("torch.nn.functional", torch.nn.functional),
                          ("torch.testing", torch.testing), ("numpy", numpy), ("math", math), ("random", random),
                          ("threading", threading)]:
        spaces.append((label, vars(module), False, False))
    for cls in (*torch.Tensor.__mro__[:-1], torch.nn.Module, torch.nn.Parameter):  # a patched __eq__
        spaces.append((f"{cls.__module__}.{cls.__qualname__}", vars(cls), False, True))
    for label, obj in _ipython_objects():  # methods replaced on the shell or kernel, or on their classes
        spaces.append((label, vars(obj), False, True))
        for cls in type(obj).__mro__[:-1]:
            spaces.append((f"{cls.__module__}.{cls.__qualname__}", vars(cls), False, True))
    seen, unique = set(), []
    for space in spaces:  # a class may be reached twice (the kernel's and the shell's bases)
        if space[0] not in seen:
            seen.add(space[0])
            unique.append(space)
    return unique


def _library_dirs() -> tuple:
    """Where installed code lives: the interpreter's own folders and every folder on sys.path at arm time
    (a machine may add packages through PYTHONPATH), but not the notebook's folder or the course's."""
    course = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    here = os.path.abspath(os.getcwd())
    dirs = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    dirs |= {os.path.abspath(p) for p in sys.path if p and os.path.isdir(p)}
    dirs -= {course, here}
    return tuple(d.rstrip(os.sep) + os.sep for d in dirs)


def _import_quietly(name: str) -> None:
    try:
        importlib.import_module(name)
    except BaseException:  # noqa: BLE001 - a module the notebook imports may be missing or exit on import
        pass


def watcher():
    """Snapshot now; return changes() -> sorted list of what was replaced, added or switched on since."""
    compiled, partial, plain = COMPILED, functools.partial, PLAIN
    exact_types = (dict, list, tuple, set, frozenset)
    import torch
    tensor_cls, torch_c = torch.Tensor, torch._C

    def from_library(value, depth=0) -> bool:
        """Defined by installed code (torch wrapping its own functions lazily, say), not by a cell."""
        while hasattr(value, "__wrapped__") and depth < 50:
            value, depth = value.__wrapped__, depth + 1
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        if isinstance(value, property):
            value = value.fget
        if isinstance(value, partial):
            return from_library(value.func, depth + 1)
        code = getattr(value, "__code__", None)
        if code is not None:
            return code.co_filename.startswith(library_dirs)
        if isinstance(value, compiled):
            return True  # compiled code comes from an extension module, not from a cell
        if isinstance(value, (type, types.ModuleType)):
            module = value if isinstance(value, types.ModuleType) else module_dict.get(value.__module__)
            return str(getattr(module, "__file__", "") or "").startswith(library_dirs)
        return not callable(value)

    def fingerprint(value, depth=0):
        """A course constant, by content for plain data (a dict of bytes per dtype, say), else by identity."""
        kind = type(value)
        if kind in plain:
            return kind, value
        if kind in exact_types and depth < 4:
            items = value.items() if kind is dict else value
            if kind is dict:
                items = [(fingerprint(k, depth + 1), fingerprint(v, depth + 1)) for k, v in items]
            else:
                items = [fingerprint(v, depth + 1) for v in items]
            return kind, id(value), len(value), tuple(items) if kind not in (set, frozenset) else frozenset(items)
        return "object", id(value)

    def hook_lists():
        found = {}
        for label, obj in ipython_objects:
            if label == "shell":
                found |= {f"shell.{name}": list(getattr(obj, name)) for name in SHELL_HOOK_LISTS}
            elif label == "shell.input_transformer_manager":
                found |= {f"{label}.{name}": list(getattr(obj, name, [])) for name in MANAGER_HOOK_LISTS}
            elif label == "shell.events":
                found |= {f"shell.events.{event}": list(callbacks) for event, callbacks in obj.callbacks.items()}
        return found

    def stray_threads():
        """Threads a cell started and left running: any, but those of an installed library's own Thread
        class (tqdm's monitor) or running an installed library's Python function."""
        found = []
        for thread in list(threading_active.values()):
            if thread in threads_before or not thread.is_alive():
                continue
            kind = type(thread)
            target = getattr(thread, "function" if kind is threading_timer else "_target", None)
            if kind in (threading_thread, threading_timer):
                ok = type(target) is types.FunctionType and target.__code__.co_filename.startswith(library_dirs)
            else:
                ok = from_library(kind)
            if not ok:
                found.append(f"a thread left running (`{thread.name}`)")
        return found

    def foreign_tensor_types():
        found, stack = [], list(type.__subclasses__(tensor_cls))
        while stack:
            cls = stack.pop()
            if cls not in known_tensor_types and not from_library(cls):
                found.append(f"a torch.Tensor subclass `{cls.__qualname__}`")
            stack.extend(type.__subclasses__(cls))
        return found

    def changes() -> list:
        # Keys first, by iteration alone: a key that is not a str could run code when compared.
        odd = [label for label, ns, _, _ in [("builtins", builtins_dict, 0, 0), *spaces]
               if any(type(k) is not str for k in list(ns))]  # noqa: E721
        if odd:
            return [f"{label} (a key that is not a string)" for label in odd]
        found = [f"builtins.{k}" for k, v in genuine_builtins.items()
                 if k not in ipython_names and builtins_dict.get(k) is not v]
        found += [f"builtins.{k} (added)" for k in list(builtins_dict) if k not in genuine_builtins
                  and k not in ipython_names]
        if found:  # the builtins the rest relies on are not trustworthy: report without using them
            return found
        if sys.modules is not module_dict:
            found.append("sys.modules")
        found += [f"sys.modules[{name!r}]" for name, module in modules.items()
                  if module_dict.get(name) is not module or type(module) is not module_types[name]]
        for label, (function, code, defaults, kwdefaults) in internals.items():
            if (function.__code__ is not code or function.__defaults__ is not defaults
                    or function.__kwdefaults__ is not kwdefaults):
                found.append(f"{label} (its code)")
        if len(gc_callbacks) != len(gc_before) or any(a is not b for a, b in zip(gc_callbacks, gc_before)):
            found.append("gc.callbacks")
        for label, ns, exact, report_added in spaces:
            old = held[label]
            for name, value in list(ns.items()):
                if name in old:  # (a callable swapped for a non-callable is no library's doing either)
                    if value is old[name] or (not exact and callable(value) and from_library(value)):
                        continue
                elif not report_added or from_library(value):
                    continue
                found.append(f"{label}.{name}")
            found += [f"{label}.{name} (deleted)" for name in old if name not in ns]
        for label, before in constants.items():
            ns, name = constant_spaces[label]
            if fingerprint(ns.get(name)) != before:
                found.append(f"{label} (its contents)")
        for label, before in hooks.items():
            now = hook_lists().get(label, [])
            if len(now) != len(before) or any(a is not b for a, b in zip(now, before)):
                added = [h for h in now if not any(h is b for b in before)]
                if label.startswith("shell.events.") and all(from_library(h) for h in added) and len(now) >= len(
                        before):
                    continue  # IPython's own callbacks (%matplotlib inline registers one)
                found.append(label)
        for name, before in sys_hooks.items():
            now = getattr(sys, name, None)
            if now is not before and not from_library(now):
                found.append(f"sys.{name}")
        for label, obj in ipython_objects:
            if label == "shell" and getattr(obj, "custom_exceptions", ()):
                found.append("shell.set_custom_exc")
            if label == "shell" and obj.user_ns.get("__builtins__") is not user_builtins:
                found.append("the notebook's `__builtins__`")
        for number, before in handlers.items():
            now = getsignal(number)
            if now is not before and not from_library(now):
                found.append(f"a signal handler ({number!r})")
        found += stray_threads()
        for label, now in (("sys.settrace", sys.gettrace()), ("sys.setprofile", sys.getprofile()),
                           ("threading.settrace", getattr(threading, "_trace_hook", None)),
                           ("threading.setprofile", getattr(threading, "_profile_hook", None))):
            if now is not None and now is not tracing[label]:
                found.append(label)
        if torch_c._len_torch_function_stack() or torch_c._len_torch_dispatch_stack() > dispatch_depth:
            found.append("a torch function or dispatch mode left on")
        found += foreign_tensor_types()
        return sorted(found)

    spaces = _watched()
    ipython_objects = _ipython_objects()
    held = {label: {k: v for k, v in list(ns.items()) if callable(v) or isinstance(v, types.ModuleType)}
            for label, ns, _, _ in spaces}
    constant_spaces = {f"{label}.{name}": (ns, name) for label, ns, exact, added in spaces if exact and not added
                       for name, value in list(ns.items())
                       if not callable(value) and not isinstance(value, types.ModuleType) and not name.startswith("__")}
    constants = {label: fingerprint(ns.get(name)) for label, (ns, name) in constant_spaces.items()}
    hooks = hook_lists()
    import signal
    getsignal = signal.getsignal
    handlers = {number: getsignal(number) for number in signal.valid_signals()
                if number not in (signal.SIGKILL, signal.SIGSTOP)}
    user_builtins = next((obj.user_ns.get("__builtins__") for label, obj in ipython_objects if label == "shell"), None)
    threads_before = set(threading.enumerate())
    threading_active, threading_thread, threading_timer = threading._active, threading.Thread, threading.Timer
    sys_hooks = {name: getattr(sys, name, None) for name in ("excepthook", "unraisablehook", "breakpointhook")}
    tracing = {"sys.settrace": sys.gettrace(), "sys.setprofile": sys.getprofile(),
               "threading.settrace": getattr(threading, "_trace_hook", None),
               "threading.setprofile": getattr(threading, "_profile_hook", None)}
    dispatch_depth = torch_c._len_torch_dispatch_stack()
    roots = (*EXACT_PACKAGES, "torch", "numpy", "math", "random", "builtins")
    modules, module_dict = {n: m for n, m in list(sys.modules.items()) if n.split(".")[0] in roots}, sys.modules
    module_types = {name: type(module) for name, module in modules.items()}  # __class__ swapped on a module
    internals = {f"{label}.{name}": (value, value.__code__, value.__defaults__, value.__kwdefaults__)
                 for label, ns, _, _ in spaces for name, value in list(ns.items()) if isinstance(value, types.FunctionType)}
    import gc
    gc_callbacks, gc_before = gc.callbacks, list(gc.callbacks)
    genuine_builtins, builtins_dict, ipython_names = dict(vars(builtins)), vars(builtins), IPYTHON_BUILTINS
    library_dirs = _library_dirs()
    known_tensor_types = set()
    stack = list(type.__subclasses__(tensor_cls))
    while stack:
        cls = stack.pop()
        known_tensor_types.add(cls)
        stack.extend(type.__subclasses__(cls))
    return changes


def load_course(preload=()) -> None:
    """Import the libraries the notebook imports, then the graders it names (all of them if it names
    none): importing first matters, since a library may patch torch when imported, and that is not
    tampering. Only the graders the notebook uses: Exercise 4's imports PEFT, which takes seconds."""
    for name in preload:
        _import_quietly(name)
    import graders
    wanted = [name for name in preload if name.startswith("graders.")] or [
        f"graders.{info.name}" for info in pkgutil.iter_modules(graders.__path__)]
    for name in ["graders._core", *wanted]:
        _import_quietly(name)


def _make_probe(secret: bytes, install):
    """Build probe(nonce) -> signed list of what changed, `install` it, then snapshot what is watched
    (so the installed probe is part of the snapshot)."""
    sha256 = hashlib.sha256
    key = secret.ljust(64, b"\0")
    inner_pad, outer_pad = bytes(b ^ 0x36 for b in key), bytes(b ^ 0x5C for b in key)

    def sign(nonce: str, body: str) -> str:  # HMAC-SHA256 (RFC 2104) from captured pieces only
        inner = sha256(inner_pad + f"{nonce}:{body}".encode()).digest()
        return sha256(outer_pad + inner).hexdigest()

    def probe(nonce: str) -> str:
        body = "\n".join(changes())
        return f"{sign(nonce, body)}\n{body}"

    install(probe)
    changes = watcher()


def arm(key_hex: str, preload=()) -> None:
    """In the notebook's kernel, before its first cell: load the course, then remember what it looks like."""
    load_course(preload)
    _make_probe(bytes.fromhex(key_hex), install=lambda real: globals().__setitem__("probe", real))


def probe(nonce: str) -> str:  # replaced by arm(); unsigned
    return "unarmed\n"


def verify(answer: str, nonce: str, key_hex: str):
    """Harness side: the list of replaced names, or None when `probe` did not sign the answer."""
    if not isinstance(answer, str) or "\n" not in answer:
        return None
    mac, body = answer.split("\n", 1)
    expected = hmac.new(bytes.fromhex(key_hex), f"{nonce}:{body}".encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(mac, expected):
        return None
    return body.split("\n") if body else []
