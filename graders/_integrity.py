"""Tamper detection inside the notebook's kernel, for autograding.

The grading harness (instructor/guarded_execute.py) calls `arm(key, preload)` in a fresh kernel before
any notebook cell runs, and `probe(nonce)` after every cell. `probe` lists what the graders rely on
that has been replaced since `arm` (a grader function, `torch.allclose`, `math.isclose`, a builtin...)
and signs its answer with the key, so a notebook that swaps `probe` out cannot answer for it.

Students never run this: without `arm` nothing here is active. It stops monkeypatching; it is not a
sandbox against code written to dig the key out of this module's closures.
"""
import builtins
import functools
import hashlib
import hmac
import importlib
import inspect
import json
import math
import pkgutil
import random
import sys
import sysconfig
import types

# Modules whose functions and classes must stay exactly as loaded (the course's own code).
EXACT_PACKAGES = ("graders", "utils")
# Names IPython itself rebinds in builtins while it runs cells.
IPYTHON_BUILTINS = {"_", "__", "___", "exit", "quit", "get_ipython", "display", "__IPYTHON__", "__builtins__",
                    "help", "copyright", "credits", "license", "dreload", "__debug__"}

_LIBRARY_DIRS = tuple({sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")})


def _from_library(value) -> bool:
    """True when `value` was defined by installed code (torch wrapping its own functions lazily, say),
    not by a notebook cell or a file the notebook wrote."""
    try:
        value = inspect.unwrap(value)
    except Exception:  # noqa: BLE001 - a hostile __wrapped__ chain
        return False
    if isinstance(value, (staticmethod, classmethod)):
        value = value.__func__
    if isinstance(value, property):
        value = value.fget
    if isinstance(value, functools.partial):
        return _from_library(value.func)
    code = getattr(value, "__code__", None)
    if code is not None:
        return code.co_filename.startswith(_LIBRARY_DIRS)
    if isinstance(value, (types.BuiltinFunctionType, types.WrapperDescriptorType, types.MethodDescriptorType,
                          types.MethodWrapperType, types.ClassMethodDescriptorType, types.GetSetDescriptorType,
                          types.MemberDescriptorType)):
        return True  # compiled code: comes from an extension module, not from a cell
    if isinstance(value, (type, types.ModuleType)):
        module = value if isinstance(value, types.ModuleType) else sys.modules.get(value.__module__)
        return str(getattr(module, "__file__", "") or "").startswith(_LIBRARY_DIRS)
    return not callable(value)


def _watched():
    """(label, namespace dict, exact?, report added names?) for everything the graders lean on."""
    import numpy
    import torch
    import torch.nn.functional
    import torch.testing
    spaces = [("builtins", vars(builtins), False, False)]  # not exact: ipykernel swaps `input` in and out
    for name, module in sorted(sys.modules.items()):
        if isinstance(module, types.ModuleType) and name.split(".")[0] in EXACT_PACKAGES:
            spaces.append((name, vars(module), True, False))
    for label, module in [("torch", torch), ("torch.nn.functional", torch.nn.functional),
                          ("torch.testing", torch.testing), ("numpy", numpy), ("math", math), ("random", random)]:
        spaces.append((label, vars(module), False, False))
    for cls in (*torch.Tensor.__mro__[:-1], torch.nn.Module):  # a patched __eq__ lands in a class dict
        spaces.append((f"{cls.__module__}.{cls.__qualname__}", vars(cls), False, True))
    return spaces


def _snapshot(spaces) -> dict:
    # The objects themselves, not their ids: a freed function's id can be reused by its replacement.
    modules = {name: mod for name, mod in list(sys.modules.items())
               if name.split(".")[0] in (*EXACT_PACKAGES, "torch", "numpy", "math", "random", "builtins")}
    names = {label: {k: v for k, v in list(ns.items()) if callable(v) or isinstance(v, types.ModuleType)}
             for label, ns, _, _ in spaces}
    return {"modules": modules, "names": names}


def _changes(before: dict, spaces) -> list:
    changed = []
    for name, module in before["modules"].items():
        if sys.modules.get(name) is not module:
            changed.append(f"sys.modules[{name!r}]")
    for label, ns, exact, report_added in spaces:
        old = before["names"].get(label, {})
        for key, value in list(ns.items()):
            if label == "builtins" and key in IPYTHON_BUILTINS:
                continue
            if key in old:
                if value is old[key] or (not exact and _from_library(value)):
                    continue
            elif not (report_added and not _from_library(value)):
                continue
            changed.append(f"{label}.{key}")
        for key in old.keys() - ns.keys():
            if not (label == "builtins" and key in IPYTHON_BUILTINS):
                changed.append(f"{label}.{key} (deleted)")
    return sorted(changed)


def _import_quietly(name: str) -> None:
    try:
        importlib.import_module(name)
    except BaseException:  # noqa: BLE001 - a module the notebook imports may be missing or exit on import
        pass


def arm(key_hex: str, preload=()) -> None:
    """Load the graders and the libraries the notebook imports, then remember what they look like.

    Importing first matters: libraries may patch torch when imported, and that is not tampering."""
    for name in preload:
        _import_quietly(name)
    import graders
    for info in pkgutil.iter_modules(graders.__path__):
        _import_quietly(f"graders.{info.name}")
    secret, state = bytes.fromhex(key_hex), {}

    def probe(nonce: str) -> str:
        changed = _changes(state["before"], _watched())
        body = json.dumps(changed)
        mac = hmac.new(secret, f"{nonce}:{body}".encode(), hashlib.sha256).hexdigest()
        return json.dumps({"changed": changed, "mac": mac})

    globals()["probe"] = probe  # installed before the snapshot, so it is part of what is watched
    state["before"] = _snapshot(_watched())


def probe(nonce: str) -> str:  # replaced by arm()
    return json.dumps({"changed": [], "mac": None})


def verify(answer: str, nonce: str, key_hex: str):
    """Harness side: the list of replaced names, or None when the answer was not signed by `probe`."""
    try:
        data = json.loads(answer)
        changed = data["changed"]
        expected = hmac.new(bytes.fromhex(key_hex), f"{nonce}:{json.dumps(changed)}".encode(),
                            hashlib.sha256).hexdigest()
        if isinstance(data["mac"], str) and hmac.compare_digest(data["mac"], expected):
            return list(changed)
    except (ValueError, KeyError, TypeError):
        pass
    return None
