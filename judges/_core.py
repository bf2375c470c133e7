"""What every judge shares: drawing a check's inputs, reading the data a collector sent, failing with a
message that teaches.

A judge module (judges/<exercise>.py) has, for each check `name`:

    ask_<name>(ctx) -> (request, secret)   the inputs to hand the notebook (JSON-able) and what only the
                                           judge keeps (expected values, its own fixtures' seeds...)
    judge_<name>(data, secret) -> str      the message of a pass; raises Failed(message) otherwise

`data` is whatever the notebook's process sent: nothing in it is trusted. Read it with `call`, `value`,
`number`, `flag`... below, which raise `Malformed` (the data broke the schema: the check fails, saying so)
or `Failed` (the answer is wrong: the message says why).
"""
import dataclasses
import json
import math
import os
import traceback

from graders import _wire
from graders._wire import Malformed, MetaTensor, Opaque  # noqa: F401 - judges use them

MALFORMED = ("the grader could not read what the notebook's process sent for this check ({}); nothing a "
             "notebook says about itself is trusted, so this check earns nothing")


class Failed(Exception):
    """The answer is wrong; the message says what was expected and what came back."""


def fail(message: str):
    raise Failed(message)


@dataclasses.dataclass
class Context:
    """What a judge knows about the grading at hand (never asked of the notebook's process)."""
    seed: int
    cuda: bool = False  # the notebook runs with a CUDA GPU
    bf16: bool = False  # ...that computes in bfloat16
    reference: object = None  # runs heavy references in a process of their own (instructor/grading/reference.py)

    @property
    def compute_dtype(self):
        import torch
        return torch.bfloat16 if self.bf16 else torch.float16 if self.cuda else torch.float32


def fresh_seed() -> int:
    """A new seed every grading (so nothing can be memorised), named in the messages."""
    return int.from_bytes(os.urandom(4), "little") % 1_000_000


def local_context() -> Context:
    """The context of this very process (stock nbgrader: collector and judge in one process)."""
    import torch
    cuda = torch.cuda.is_available()
    return Context(fresh_seed(), cuda, cuda and torch.cuda.get_device_capability(0) >= (8, 0), LocalReference())


class LocalReference:
    """Heavy references computed in this process (stock nbgrader only; the engine runs them apart)."""

    def __call__(self, exercise: str, task: str, **arguments):
        from judges import _reference
        return _reference.run(exercise, task, arguments)


# ------------------------------------------------------------------------------------ reading data
def part(data, key: str):
    if type(data) is not dict or key not in data:
        raise Malformed(f"no {key!r}")
    return data[key]


def flag(data, key: str) -> bool:
    got = part(data, key)
    if type(got) is not bool:
        raise Malformed(f"{key!r} is not true or false")
    return got


def integer(data, key: str) -> int:
    got = part(data, key)
    if type(got) is not int:
        raise Malformed(f"{key!r} is not an integer")
    return got


def text(data, key: str) -> str:
    got = part(data, key)
    if type(got) is not str:
        raise Malformed(f"{key!r} is not text")
    return got


def items(data, key: str, count: int = None) -> list:
    got = part(data, key)
    if type(got) is not list or (count is not None and len(got) != count):
        raise Malformed(f"{key!r} is not a list" + ("" if count is None else f" of {count}"))
    return got


def named_sizes(data, key: str) -> list:
    """A list of [name, size] pairs (a model's trainable parameters and their numbers of elements)."""
    got = items(data, key)
    for pair in got:
        if type(pair) is not list or len(pair) != 2 or type(pair[0]) is not str or type(pair[1]) is not int:
            raise Malformed(f"{key!r} is not a list of [name, size]")
    return got


def value(data, key: str = None):
    """A value the collector encoded (graders/_wire.py), decoded."""
    return _wire.decode(data if key is None else part(data, key))


def defined(data, name: str, callable_: bool = True) -> None:
    """Fail unless the collector found `name` in the notebook (and callable, if it should be)."""
    found = data if type(data) is dict else {}
    if flag(found, "defined") is False:
        fail(f"`{name}` is not defined. Run the cell that defines it (and the cells above it), and keep the "
             "name exactly as given.")
    if callable_ and flag(found, "callable") is False:
        fail(f"`{name}` should be a function (or class), but it is a {text(found, 'type').rsplit('.', 1)[-1]}.")


def call(record, what: str):
    """The result of one call the collector made (graders._collect.attempt), or a failure naming the call."""
    if type(record) is not dict or not ({"value"} <= set(record) or {"raised"} <= set(record)):
        raise Malformed("a call record without a value or an error")
    if "raised" in record:
        error = record["raised"]
        kind, message = text(error, "type"), text(error, "message")
        if kind == "NotImplementedError":
            fail(f"{what} is not implemented yet: replace `raise NotImplementedError()` with your code.")
        if kind == "CheckFailed":
            fail(message)
        fail(f"{what} raised {kind}: {message}")
    return _wire.decode(record["value"])


def raised_kind(record):
    """The builtin kinds of the error a call raised (e.g. ["ValueError", "Exception", ...]), or None."""
    if type(record) is not dict:
        raise Malformed("a call record that is not a record")
    if "raised" not in record:
        return None
    kinds = part(record["raised"], "builtin_kinds")
    if type(kinds) is not list or not all(type(k) is str for k in kinds):
        raise Malformed("an error without its kinds")
    return kinds


def as_number(got, what: str) -> float:
    """A returned number (int, float, or a one-element tensor) as a float, or a failure saying what came back."""
    import torch
    if isinstance(got, torch.Tensor):
        if got.numel() != 1:
            fail(f"{what} should be a single number (a Python number or a 0-d tensor), got a tensor of shape "
                 f"{tuple(got.shape)}.")
        number = float(got.reshape(()).double())
    elif isinstance(got, bool) or got is None or not isinstance(got, (int, float)):
        fail(f"{what} should be a number, got {describe(got)}.")
    else:
        number = float(got)
    if not math.isfinite(number):  # every comparison with NaN is False: no tolerance test may meet one
        fail(f"{what} should be a finite number, got {number!r}.")
    return number


def describe(got) -> str:
    """How a message names what came back."""
    import torch
    if isinstance(got, torch.Tensor):
        return f"a {got.dtype} tensor of shape {tuple(got.shape)}"
    if isinstance(got, (tuple, list)):
        return f"a {type(got).__name__} of length {len(got)}"
    if isinstance(got, Opaque):
        return f"a {got.type_name.rsplit('.', 1)[-1]}"
    if isinstance(got, dict):
        return f"a dict with keys {list(got)[:6]}"
    return f"{got!r} ({type(got).__name__})"


def table(name: str, params: list, reference, calls, defaults: dict = None) -> dict:
    """A helper as data for graders._collect.helpers_as_data: `reference` on each of `calls` (argument tuples)."""
    rows = [[_wire.encode(list(args)), _wire.encode(reference(*args))] for args in calls]
    return {"params": params, "defaults": defaults or {}, "table": rows}


# ------------------------------------------------------------------------------------ running a check
@dataclasses.dataclass
class Verdict:
    passed: bool
    message: str
    problem: str = None  # for the instructor: the judge itself broke (a bug), or the data was malformed


def ask(module, name: str, ctx: Context):
    """(request, secret) of check `name`."""
    return getattr(module, f"ask_{name}")(ctx)


def judge(module, name: str, data, secret) -> Verdict:
    """The verdict on `data`: never raises."""
    if type(data) is dict and "$collector_error" in data:
        return Verdict(False, f"the hidden check could not collect your answer: {str(data['$collector_error'])[:500]}")
    try:
        message = getattr(module, f"judge_{name}")(data, secret)
        return Verdict(True, _with_warnings(message, data))
    except Failed as failure:
        return Verdict(False, _with_warnings(str(failure), data))
    except Malformed as error:
        return Verdict(False, MALFORMED.format(error), f"malformed data for {name}: {error}")
    except Exception:  # noqa: BLE001 - a judge's own bug: the student is not blamed in words, the instructor is told
        return Verdict(False, f"the grader could not judge {name} (the instructor has been told)",
                       f"the judge of {name} broke: {traceback.format_exc(limit=4)[-1500:]}")


def _with_warnings(message: str, data) -> str:
    said = []

    def scan(node, depth=0):
        if depth > 6 or len(said) > 3:
            return
        if type(node) is dict:
            for key, item in node.items():
                if key == "warnings" and type(item) is list:
                    said.extend(str(w)[:200] for w in item[:3] if type(w) is str)
                else:
                    scan(item, depth + 1)
        elif type(node) is list:
            for item in node[:50]:
                scan(item, depth + 1)

    scan(data)
    said = list(dict.fromkeys(said))[:3]
    if not said:
        return message
    return message + " (Warnings while it ran, which cost nothing: " + "; ".join(said) + ")"


def judge_here(module, name: str, collect) -> tuple:
    """Stock nbgrader: ask, collect and judge in this one process. (passed, message)."""
    ctx = local_context()
    try:
        request, secret = ask(module, name, ctx)
    except Failed as failure:
        return False, str(failure)
    data = json.loads(json.dumps(collect(json.loads(json.dumps(request)))))
    verdict = judge(module, name, data, secret)
    return verdict.passed, verdict.message


# ------------------------------------------------------------------------------------ functions of inputs
def spec(*args, **kwargs) -> dict:
    """One call for graders._collect.calls."""
    return {"args": [_wire.encode(a) for a in args], "kwargs": {k: _wire.encode(v) for k, v in kwargs.items()}}


def calls_request(answer: str, specs: list, helpers: dict = None, watch_inputs: bool = False) -> dict:
    request = {"answer": answer, "calls": specs}
    if helpers:
        request["helpers"] = helpers
    if watch_inputs:
        request["watch_inputs"] = True
    return request


def records(data, answer: str, count: int, callable_: bool = True) -> list:
    """The call records graders._collect.calls sent, once the answer is known to be defined."""
    defined(part(data, "answer"), answer, callable_)
    got = items(data, "calls", count)
    for record in got:
        if type(record) is not dict:
            raise Malformed("a call record that is not a record")
    return got


def changed_inputs(record) -> bool:
    got = part(record, "inputs_changed")
    if type(got) is not bool:
        raise Malformed("inputs_changed is not true or false")
    return got
