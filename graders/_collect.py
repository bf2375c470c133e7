"""The collector's side of a check: call the student's names on the inputs the judge hands over, and
hand back what happened as plain data. Nothing here knows what is right.

A hidden test cell calls `graders.<exercise>.check_<answer>(globals())`, which calls `check(...)` here:

- graded by the course's engine (instructor/grading), the notebook's process holds a `Channel` to the
  judge, which runs in the grading worker: `check` asks the judge for this check's inputs, runs the
  collector, sends its data back, and learns the verdict (the worker writes the judge's message into the
  graded notebook; nothing this process says about itself counts);
- anywhere else (stock `nbgrader autograde`, a student's own Jupyter), the judge is imported here and
  runs in this same process: convenient, and documented as not forgery-proof (docs/grading.md).
"""
import contextlib
import importlib
import inspect
import json
import logging
import random
import threading
import warnings

from graders import _wire
from utils.selfcheck import CheckFailed  # the same failure (and display) as the visible self-checks

MAX_MESSAGE = 48 * 2**20  # bytes of one message either way; the worker enforces its own limit too

_channel = None  # set by the clean room before the first cell (instructor/grading/cleanroom.py)


class Channel:
    """One line of JSON each way over a socket to the grading worker."""

    def __init__(self, sock):
        self.sock, self.pending = sock, b""

    def send(self, message: dict) -> None:
        self.sock.sendall(json.dumps(message, separators=(",", ":")).encode() + b"\n")

    def receive(self) -> dict:
        while b"\n" not in self.pending:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("the grading worker closed the channel")
            self.pending += chunk
            if len(self.pending) > MAX_MESSAGE:
                raise ConnectionError("the grading worker sent too much")
        line, self.pending = self.pending.split(b"\n", 1)
        return json.loads(line)

    def ask(self, name: str) -> dict:
        self.send({"event": "ask", "check": name})
        reply = self.receive()
        if "request" not in reply:
            said = reply.get("message") or (reply.get("verdict") or {}).get("message")
            raise CheckFailed(said or f"the grader did not hand over the inputs of {name}")
        return reply["request"]

    def answer(self, name: str, data) -> dict:
        self.send({"event": "answer", "check": name, "data": data})
        return self.receive()


def connect(sock) -> None:
    global _channel
    _channel = Channel(sock)


def check(exercise: str, name: str, ns: dict, collect, **handed) -> None:
    """Grade the answer `name` of `exercise`: this process collects, the judge decides."""
    if _channel is not None:
        request = _channel.ask(name)
        verdict = _channel.answer(name, _collected(collect, ns, request, handed)).get("verdict") or {}
        if not verdict.get("passed"):
            raise CheckFailed(verdict.get("message") or "the check failed")
        return
    judges = importlib.import_module(f"judges.{exercise}")
    from judges import _core
    passed, message = _core.judge_here(judges, name, lambda request: _collected(collect, ns, request, handed))
    if not passed:
        raise CheckFailed(message)
    print(f"\u2713 {message}")


def _collected(collect, ns, request, handed):
    """The collector's data, checked to be JSON (a collector that breaks sends why, and earns nothing)."""
    try:
        data = collect(ns, request, **handed)
        text = json.dumps(data)
    except Exception as error:  # noqa: BLE001 - the student's code can break a collector; the judge says so
        return {"$collector_error": f"{type(error).__name__}: {str(error)[:500]}"}
    return json.loads(text)


# ------------------------------------------------------------------------------ what collectors use
def lookup(ns: dict, name: str) -> dict:
    """{"defined": False} or {"defined": True, "callable": ..., "type": ...}: the judge words the message."""
    if name not in ns:
        return {"defined": False}
    value = ns[name]
    return {"defined": True, "callable": callable(value), "type": _wire._type_name(value)}


def answer(ns: dict, name: str):
    """(data, the student's `name`): data starts as {"answer": lookup(...)}; the name is None where it is not a
    function to call (the judge words why from the lookup)."""
    found = lookup(ns, name)
    return {"answer": found}, ns[name] if found["defined"] and found["callable"] else None


def attempt(fn, *args, **kwargs) -> dict:
    """Call student code: {"value": its result, encoded} or {"raised": {...}}, and any warnings it gave.

    Warnings are kept, never printed to stderr (where nbgrader would zero the cell): the judge shows them."""
    caught = []
    with warnings.catch_warnings(record=True) as recorded, _library_logs(caught):
        warnings.simplefilter("always")
        try:
            result = {"value": _wire.encode(fn(*args, **kwargs))}
        except Exception as error:  # noqa: BLE001 - any error of the student's is data for the judge
            result = {"raised": raised(error)}
    said = [f"{w.category.__name__}: {w.message}" for w in recorded] + caught
    if said:
        result["warnings"] = list(dict.fromkeys(s[:300] for s in said))[:5]
    return result


def raised(error: BaseException) -> dict:
    kinds = [k.__name__ for k in type(error).__mro__ if k.__module__ == "builtins"]
    return {"type": type(error).__name__, "message": str(error)[:1000], "builtin_kinds": kinds[:8]}


class _ToList(logging.Handler):
    def __init__(self, into: list):
        super().__init__(logging.WARNING)
        self.into = into

    def emit(self, record):
        self.into.append(f"{record.name}: {record.getMessage()}")


@contextlib.contextmanager
def _library_logs(into: list):
    """Library warnings logged (transformers, PEFT, bitsandbytes) are collected instead of reaching stderr."""
    loggers = [logging.getLogger(name) for name in ("transformers", "peft", "bitsandbytes", "accelerate")]
    saved = [(lg, lg.handlers[:], lg.propagate) for lg in loggers]
    handler = _ToList(into)
    for lg in loggers:
        lg.handlers, lg.propagate = [handler], False
    try:
        yield
    finally:
        for lg, handlers, propagate in saved:
            lg.handlers, lg.propagate = handlers, propagate


@contextlib.contextmanager
def standing_in(ns: dict, stand_ins: dict):
    """Put `stand_ins` (name -> object) into the notebook's namespace for one check, then restore it: the
    student's functions look their helpers up there when called, so a check can swap in what is not theirs."""
    saved = {name: ns[name] for name in stand_ins if name in ns}
    ns.update(stand_ins)
    try:
        yield
    finally:
        for name in stand_ins:
            if name in saved:
                ns[name] = saved[name]
            else:
                ns.pop(name, None)


def helpers_as_data(ns: dict, helpers: dict):
    """Table-driven stand-ins for an answer's helpers, in the notebook's namespace for one check.

    `helpers`: name -> {"params": [...], "defaults": {...}, "table": [[args, value], ...]}, made by the judge
    from its reference on this check's own inputs. The stand-in answers those calls and no others: the
    helper's outputs travel as data, never its code, and a wrong helper of the student's costs nothing here."""
    return standing_in(ns, {name: _table_function(name, spec) for name, spec in helpers.items()})


def _table_function(name: str, spec: dict):
    params, defaults = spec["params"], spec.get("defaults", {})
    table = {_key(_wire.decode(args)): _wire.decode(value) for args, value in spec["table"]}
    signature = inspect.Signature([inspect.Parameter(p, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                     default=defaults.get(p, inspect.Parameter.empty))
                                   for p in params])

    def stand_in(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        key = _key([bound.arguments[p] for p in params])
        if key not in table:
            raise KeyError(f"the grader's stand-in for {name} knows only this check's own inputs, not "
                           f"{name}({', '.join(map(repr, bound.arguments.values()))})")
        value = table[key]
        return dict(value) if isinstance(value, dict) else value

    stand_in.__name__ = name
    return stand_in


def _key(args) -> str:
    """The same key for equal arguments, however written (7_000_000_000 or 7e9, a list or a tuple)."""
    def normal(value):
        if isinstance(value, bool) or value is None or isinstance(value, str):
            return value
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, (list, tuple)):
            return [normal(v) for v in value]
        return repr(value)
    return json.dumps(normal(list(args)))


_SEEDED = threading.RLock()


@contextlib.contextmanager
def seeded(seed: int):
    """Build a fixture with `seed` in torch's and `random`'s global generators, then put both back as they were.

    One build at a time in a process: a judge builds the same fixtures as the collector, in the grading worker,
    where several gradings' judges run at once in threads and the global generators are shared."""
    import torch
    with _SEEDED:
        state = random.getstate()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            random.seed(seed)
            try:
                yield
            finally:
                random.setstate(state)


def tensor(data):
    """A request's tensor (or any value), decoded."""
    return _wire.decode(data)


def calls(ns: dict, request: dict) -> dict:
    """The collector of an answer that is a function of plain inputs: call it on each of the judge's calls.

    request: {"answer": name, "calls": [{"args": [...], "kwargs": {...}}, ...], "helpers": {...} (optional),
    "watch_inputs": true to report whether a call changed its arguments in place}."""
    data, fn = answer(ns, request["answer"])
    if fn is None:
        return data
    records = []
    with helpers_as_data(ns, request.get("helpers", {})):
        for spec in request["calls"]:
            args = [_wire.decode(a) for a in spec.get("args", [])]
            kwargs = {key: _wire.decode(v) for key, v in spec.get("kwargs", {}).items()}
            before = json.dumps(_wire.encode([args, kwargs])) if request.get("watch_inputs") else None
            record = attempt(fn, *args, **kwargs)
            if before is not None:
                record["inputs_changed"] = json.dumps(_wire.encode([args, kwargs])) != before
            records.append(record)
    data["calls"] = records
    return data
