"""Tamper detection inside the notebook's kernel, for autograding.

The grading harness (instructor/guarded_execute.py) calls `arm(key, preload)` in a fresh kernel before
any notebook cell runs, and `probe(nonce)` after every cell. `probe` lists what the graders rely on
that has been replaced since `arm` (a grader function, `torch.allclose`, `math.isclose`, a builtin, an
entry of sys.modules) and signs its answer with the key, so a notebook that swaps `probe` out cannot
answer for it.

`probe` is built by `arm` as a closure over everything it uses (the watched namespaces, the objects
they held, the hash function, the types it compares against), and it checks the builtins first with
plain operators before calling any of them: patching this module, `inspect`, `json` or `hmac` after
`arm` cannot make it say "clean". It is not a sandbox against code written to read the key out of
the closure; students never run this module (without `arm` nothing here is active).
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
import types

# Modules whose functions and classes must stay exactly as loaded (the course's own code).
EXACT_PACKAGES = ("graders", "utils")
# Names IPython and ipykernel rebind in builtins while they run cells.
IPYTHON_BUILTINS = frozenset({"_", "__", "___", "exit", "quit", "get_ipython", "display", "__IPYTHON__",
                              "__builtins__", "help", "copyright", "credits", "license", "dreload", "__debug__",
                              "input", "raw_input"})
COMPILED = (types.BuiltinFunctionType, types.WrapperDescriptorType, types.MethodDescriptorType,
            types.MethodWrapperType, types.ClassMethodDescriptorType, types.GetSetDescriptorType,
            types.MemberDescriptorType)


def _watched():
    """(label, namespace, exact?, report added names?) for everything the graders lean on."""
    import numpy
    import torch
    import torch.nn.functional
    import torch.testing
    spaces = [(name, vars(module), True, False) for name, module in sorted(sys.modules.items())
              if isinstance(module, types.ModuleType) and name.split(".")[0] in EXACT_PACKAGES]
    for label, module in [("torch", torch), ("torch.nn.functional", torch.nn.functional),
                          ("torch.testing", torch.testing), ("numpy", numpy), ("math", math), ("random", random)]:
        spaces.append((label, vars(module), False, False))
    for cls in (*torch.Tensor.__mro__[:-1], torch.nn.Module):  # a patched __eq__ lands in a class dict
        spaces.append((f"{cls.__module__}.{cls.__qualname__}", vars(cls), False, True))
    return spaces


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


def _make_probe(secret: bytes, install):
    """Build probe(nonce) -> signed list of what changed, `install` it, then snapshot what is watched
    (so the installed probe is part of the snapshot)."""
    compiled, partial, sha256 = COMPILED, functools.partial, hashlib.sha256
    key = secret.ljust(64, b"\0")
    inner_pad, outer_pad = bytes(b ^ 0x36 for b in key), bytes(b ^ 0x5C for b in key)

    def sign(nonce: str, body: str) -> str:  # HMAC-SHA256 (RFC 2104) from captured pieces only
        inner = sha256(inner_pad + f"{nonce}:{body}".encode()).digest()
        return sha256(outer_pad + inner).hexdigest()

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

    def changes() -> list:
        found = [f"builtins.{k}" for k, v in genuine_builtins.items()
                 if k not in ipython_names and builtins_dict.get(k) is not v]
        if found:  # the builtins the rest relies on are not trustworthy: report without using them
            return found
        if sys.modules is not module_dict:
            found.append("sys.modules")
        found += [f"sys.modules[{name!r}]" for name, module in modules.items() if module_dict.get(name) is not module]
        for label, ns, exact, report_added in spaces:
            old = held[label]
            for name, value in list(ns.items()):
                if name in old:
                    if value is old[name] or (not exact and from_library(value)):
                        continue
                elif not report_added or from_library(value):
                    continue
                found.append(f"{label}.{name}")
            found += [f"{label}.{name} (deleted)" for name in old if name not in ns]
        return sorted(found)

    def probe(nonce: str) -> str:
        body = "\n".join(changes())
        return f"{sign(nonce, body)}\n{body}"

    install(probe)
    spaces = _watched()
    held = {label: {k: v for k, v in list(ns.items()) if callable(v) or isinstance(v, types.ModuleType)}
            for label, ns, _, _ in spaces}
    roots = (*EXACT_PACKAGES, "torch", "numpy", "math", "random", "builtins")
    modules, module_dict = {n: m for n, m in list(sys.modules.items()) if n.split(".")[0] in roots}, sys.modules
    genuine_builtins, builtins_dict, ipython_names = dict(vars(builtins)), vars(builtins), IPYTHON_BUILTINS
    library_dirs = _library_dirs()


def arm(key_hex: str, preload=()) -> None:
    """Load the graders and the libraries the notebook imports, then remember what they look like.

    Importing first matters: libraries may patch torch when imported, and that is not tampering."""
    for name in preload:
        _import_quietly(name)
    import graders
    for info in pkgutil.iter_modules(graders.__path__):
        _import_quietly(f"graders.{info.name}")
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
