"""The pieces between a notebook's process and its judge, alone and fast: what crosses (graders/_wire.py),
what the collector does with a call (graders/_collect.py), and how a judge Session treats what arrives
(instructor/grading/judge.py). Whole gradings are in test_cleanroom.py and test_redteam.py."""
import json
import math

import pytest
import torch

from graders import _collect, _wire
from instructor.grading.judge import Session, checks_of
from judges import _core, ex1_memory


# ------------------------------------------------------------------------------------------ the wire
@pytest.mark.parametrize("value", [
    None, True, 3, -2.5, "text", [1, (2, 3)], (1, "a"), {"a": 1, 2: [3]}, frozenset({"c_attn", "c_proj"}),
    torch.arange(6, dtype=torch.int8).reshape(2, 3), torch.linspace(-1, 1, 7), torch.ones(2, dtype=torch.bfloat16),
    torch.float16, float("inf"),
])
def test_values_cross_as_they_were(value):
    back = _wire.decode(json.loads(json.dumps(_wire.encode(value))))
    if isinstance(value, torch.Tensor):
        assert back.dtype == value.dtype and torch.equal(back, value)
    else:
        assert back == value and type(back) is type(value)


def test_what_is_not_plain_data_crosses_as_its_type_name_only():
    class Sneaky:
        def __reduce__(self):
            raise AssertionError("never pickled")
    back = _wire.decode(_wire.encode(Sneaky()))
    assert isinstance(back, _wire.Opaque) and back.type_name.endswith("Sneaky")
    meta = _wire.decode(_wire.encode(torch.empty(3, 4, device="meta")))
    assert isinstance(meta, _wire.MetaTensor) and meta.shape == (3, 4)


@pytest.mark.parametrize("data", [
    [1, 2], {"$tensor": {"dtype": "float32", "shape": [2], "requires_grad": False, "device": "cpu", "bytes": "AAAA"}},
    {"$tensor": {"dtype": "object", "shape": [1], "requires_grad": False, "device": "cpu", "bytes": "AAAAAA=="}},
    {"$tensor": {"dtype": "float32", "shape": [10**9, 10**9], "requires_grad": False, "device": "cpu", "bytes": ""}},
    {"$pickle": "gASV"}, {"$dict": [[[1], 2]]}, {"a": 1, "b": 2}, {"$float": "1e999"}, "x" * 200_001,
    json.loads('{"$list": [' * 30 + "]}" * 30),
])
def test_data_that_breaks_the_schema_is_malformed_never_anything_else(data):
    with pytest.raises(_wire.Malformed):
        _wire.decode(data)


# ------------------------------------------------------------------------------------- the collector
def test_a_call_is_recorded_as_data_with_its_warnings():
    import warnings

    def noisy(x):
        warnings.warn("to copy construct from a tensor, use clone()", UserWarning)
        return x * 2

    record = _collect.attempt(noisy, 21)
    assert record["value"] == 42 and "clone()" in record["warnings"][0]
    failed = _collect.attempt(lambda: {}["missing"])
    assert failed["raised"]["type"] == "KeyError" and "LookupError" in failed["raised"]["builtin_kinds"]


def test_helpers_reach_the_notebook_as_tables_not_code():
    ns = {"bytes_per_param": "the student's"}
    helper = _core.table("bytes_per_param", ["dtype"], ex1_memory.bytes_per_param, [("float16",), ("int4",)])
    with _collect.helpers_as_data(ns, {"bytes_per_param": json.loads(json.dumps(helper))}):
        stand_in = ns["bytes_per_param"]
        assert stand_in("float16") == 2 and stand_in(dtype="int4") == 0.5
        with pytest.raises(KeyError, match="only this check's own inputs"):
            stand_in("float32")  # not among this check's inputs: the table holds no more
    assert ns == {"bytes_per_param": "the student's"}


# ---------------------------------------------------------------------------------------- the judge
TESTS = {"test_bytes_per_param": "### BEGIN HIDDEN TESTS\ngrader.check_bytes_per_param(globals())\n### END HIDDEN TESTS",
         "test_to_gb": "### BEGIN HIDDEN TESTS\ngrader.check_to_gb(globals())\n### END HIDDEN TESTS"}


def session():
    return Session("ex1_memory", TESTS, _core.local_context)


def correct_data(request, ns):
    return json.loads(json.dumps(_collect.calls(ns, request)))


def test_a_test_cell_names_its_checks():
    assert checks_of("x = 1\n### BEGIN HIDDEN TESTS\nfrom graders import ex5 as grader\n"
                     "grader.check_measure_load_memory_fresh(globals())\n### END HIDDEN TESTS") == ["measure_load_memory_fresh"]
    assert checks_of("### BEGIN HIDDEN TESTS\ngrader.check_a(globals())\ngrader.check_b(globals())\n"
                     "### END HIDDEN TESTS") == ["a", "b"]


def test_a_correct_answer_passes_and_a_claim_of_passing_does_not():
    s = session()
    request = s.handle({"event": "ask", "check": "to_gb"})["request"]
    reply = s.handle({"event": "answer", "check": "to_gb", "data": correct_data(request, {"to_gb": lambda b: b / 1e9})})
    assert reply["verdict"]["passed"]
    s = session()
    s.handle({"event": "ask", "check": "to_gb"})
    claim = s.handle({"event": "answer", "check": "to_gb", "data": {"passed": True, "verdict": "pass"}})
    assert not claim["verdict"]["passed"] and "could not read" in claim["verdict"]["message"]


def test_each_check_is_asked_once_in_order_and_answered_once():
    s = session()
    first = s.handle({"event": "ask", "check": "to_gb"})  # the later check first: the earlier one is closed
    assert "request" in first
    assert "message" in s.handle({"event": "ask", "check": "to_gb"})  # never twice
    assert "message" in s.handle({"event": "ask", "check": "bytes_per_param"})
    data = correct_data(first["request"], {"to_gb": lambda b: b / 1e9})
    assert s.handle({"event": "answer", "check": "to_gb", "data": data})["verdict"]["passed"]
    again = s.handle({"event": "answer", "check": "to_gb", "data": data})
    assert not again["verdict"]["passed"]
    outcomes = s.finish()
    assert outcomes["test_to_gb"].passed and not outcomes["test_bytes_per_param"].passed
    assert "later check first" in outcomes["test_bytes_per_param"].message


def test_answers_for_other_inputs_fail():
    """Data right for one drawing of the inputs is wrong for the next: a replay earns nothing."""
    first, second = session(), session()
    old = first.handle({"event": "ask", "check": "to_gb"})["request"]
    new = second.handle({"event": "ask", "check": "to_gb"})["request"]
    assert old != new
    replayed = correct_data(old, {"to_gb": lambda b: b / 1e9})
    assert first.handle({"event": "answer", "check": "to_gb", "data": replayed})["verdict"]["passed"]
    assert not second.handle({"event": "answer", "check": "to_gb", "data": replayed})["verdict"]["passed"]


def test_a_judge_that_breaks_is_flagged_not_blamed_on_the_student():
    class Broken:
        def ask_x(ctx):
            return {}, None

        def judge_x(data, secret):
            return math.sqrt(-1)
    s = Session("ex1_memory", {"test_x": "grader.check_x(globals())"}, _core.local_context, Broken)
    s.handle({"event": "ask", "check": "x"})
    reply = s.handle({"event": "answer", "check": "x", "data": {}})
    assert not reply["verdict"]["passed"] and "instructor has been told" in reply["verdict"]["message"]
    assert "ValueError" in s.problems[0]


# ------------------------------------------------------------------------ found by attacking the judges
def test_a_number_that_is_not_finite_never_meets_a_tolerance():
    """NaN compares False with everything, so `abs(got - want) > 1` let it pass (a blank Exercise 1 answering NaN
    earned 9 of 14); every number a judge reads must be finite."""
    nan = float("nan")
    assert not abs(nan - 124_439_808) > 1  # the defence absent: the tolerance test lets NaN through
    for got in (nan, float("inf"), torch.tensor(float("nan"))):
        with pytest.raises(_core.Failed, match="finite number"):
            _core.as_number(got, "memory_for_inference(...)")
    request = Session("ex1_memory", {"test_memory_for_inference": "grader.check_memory_for_inference(globals())"},
                      _core.local_context)
    asked = request.handle({"event": "ask", "check": "memory_for_inference"})["request"]
    data = correct_data(asked, {"memory_for_inference": lambda n, dtype="float16": float("nan")})
    reply = request.handle({"event": "answer", "check": "memory_for_inference", "data": data})
    assert not reply["verdict"]["passed"] and "finite number" in reply["verdict"]["message"]


def test_values_chosen_to_collide_are_refused_before_they_are_hashed():
    """Ints that all hash alike (k * (2**61 - 1)) make a set or a dict of them quadratic to build: 30,000 of them kept
    a worker's judge busy for half a minute. Collections keyed by anything but strings are kept small."""
    colliding = [k * ((1 << 61) - 1) for k in range(1, 30_000)]
    assert len({hash(v) for v in colliding}) == 1  # the attack is real: every one lands in the same slot
    for data in ({"$set": colliding}, {"$dict": [[v, 0] for v in colliding]},
                 {"$list": [{"$set": colliding[:1_999]} for _ in range(20)]}):
        with pytest.raises(_wire.Malformed, match="not strings"):
            _wire.decode(data)
    assert len(_wire.decode({"$set": [str(v) for v in colliding]})) == len(colliding)  # strings' hashes are salted


def test_judges_in_several_threads_build_the_collectors_fixtures_exactly():
    """A worker judges several gradings at once, in threads, and torch's global generator is one per process:
    two judges seeding it at once built different models than their collectors had (the class of 30 lost
    merge_adapter's points once). Seeded builds take turns."""
    import concurrent.futures
    from graders.ex4_peft_finetuning import build_lora_gpt2
    recipes = [{"seed": seed, "gpt2": {"n_embd": 16, "n_head": 2, "n_layer": 2, "vocab_size": 60, "n_positions": 16,
                                       "bos_token_id": 0, "eos_token_id": 0},
                "lora": {"r": 2, "target_modules": ["c_attn"]}, "init": {"match": "lora_", "std": 0.2}}
               for seed in range(8)]
    alone = [build_lora_gpt2(r).state_dict() for r in recipes]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda r: build_lora_gpt2(r).state_dict(), recipes))
    for a, b in zip(alone, together):
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_channel_stops_reading_a_flood_of_garbage():
    """Every line the notebook's process sends costs the worker a parse: two million empty lines once kept it busy
    long after the notebook was gone. Past 1,000 unreadable messages nothing more is read."""
    import socket
    from instructor.grading.execute import MAX_GARBAGE, _Channel
    ours, theirs = socket.socketpair()
    s = session()
    channel = _Channel(ours, s, {0})
    channel.start()
    try:
        theirs.sendall(b'{"event": "ready"}\n' + b"\n" * 2_000_000 + b'{"event": "end"}\n')
    except OSError:  # the channel closed its end: nothing more is read
        pass
    theirs.close()
    channel.join(60)
    assert channel.ready == {} and not channel.ended
    assert channel.garbage == MAX_GARBAGE + 1 and channel.overflow == "more than the grader reads"
