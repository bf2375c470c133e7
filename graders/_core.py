"""Machinery shared by the graders: looking answers up, calling student code safely, isolating
answers from one another, fresh randomness, and messages that say what was expected."""
import contextlib
import os
import random

import torch

from utils.selfcheck import CheckFailed  # the same failure type (and display) as the visible self-checks

__all__ = ["CheckFailed", "fail", "passed", "lookup", "call", "as_number", "using_reference", "fresh_seed", "seeded",
           "close"]


def fail(message: str):
    raise CheckFailed(message)


def passed(message: str) -> None:
    print(f"\u2713 {message}")


def lookup(ns: dict, name: str, callable_: bool = True):
    """Find the student's `name` in the notebook namespace `ns`."""
    if name not in ns:
        fail(f"`{name}` is not defined. Run the cell that defines it (and the cells above it), "
             "and keep the name exactly as given.")
    obj = ns[name]
    if callable_ and not callable(obj):
        fail(f"`{name}` should be a function (or class), but it is a {type(obj).__name__}.")
    return obj


def call(fn, *args, what: str = None, **kwargs):
    """Call student code; turn any exception into a message that names the call."""
    what = what or f"{getattr(fn, '__name__', 'your function')}(...)"
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        fail(f"{what} is not implemented yet: replace `raise NotImplementedError()` with your code.")
    except CheckFailed:
        raise
    except Exception as error:  # noqa: BLE001 - any student error becomes a grading message
        fail(f"{what} raised {type(error).__name__}: {error}")


def as_number(value, what: str) -> float:
    """A student's number (int, float, or a one-element tensor) as a float, or a failure saying what came back."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            fail(f"{what} should be a single number (a Python number or a 0-d tensor), got a tensor of shape "
                 f"{tuple(value.shape)}.")
        return float(value.detach().reshape(()).double())
    if isinstance(value, bool) or value is None:
        fail(f"{what} should be a number, got {value!r}.")
    try:
        return float(value)
    except (TypeError, ValueError):
        fail(f"{what} should be a number, got {value!r} ({type(value).__name__}).")


@contextlib.contextmanager
def using_reference(ns: dict, **references):
    """Temporarily replace names in the notebook namespace with reference versions.

    Student functions look their helpers up in `ns` at call time, so a wrong `bytes_per_param`
    does not also cost the points of a correct `memory_for_inference` that calls it."""
    saved = {name: ns[name] for name in references if name in ns}
    ns.update(references)
    try:
        yield
    finally:
        for name in references:
            if name in saved:
                ns[name] = saved[name]
            else:
                ns.pop(name, None)


def fresh_seed() -> int:
    """A new seed every grading run (so nothing can be memorised), reported in failure messages."""
    return int.from_bytes(os.urandom(4), "little") % 1_000_000


@contextlib.contextmanager
def seeded(seed: int):
    """Run a block with `seed` in torch and random, then restore the notebook's own RNG state."""
    state = random.getstate()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        random.seed(seed)
        try:
            yield
        finally:
            random.setstate(state)


def close(a, b, rel: float = 1e-6, abs_: float = 0.0) -> bool:
    return abs(float(a) - float(b)) <= max(rel * abs(float(b)), abs_)
