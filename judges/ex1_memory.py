"""Exercise 1's judges (memory calculator): the lesson's fixed facts and parameter counts drawn with a fresh
seed, judged against the reference answers below. An answer's helpers reach the notebook as tables of
their reference outputs on the check's own inputs, so a wrong `bytes_per_param` costs no other answer."""
import math
import random

from judges._core import (as_number, call, calls_request, describe, fail, part, raised_kind, records, spec,
                          table, text)

BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "int8": 1, "int4": 0.5}
TRAINING_BYTES = {"weights_bf16": 2, "gradients_bf16": 2, "adam_momentum": 4, "adam_variance": 4}
UNKNOWN_DTYPES = ["int3", "float12", "qint7", "not-a-dtype"]  # nothing a student would map on purpose; all asked
FINETUNING_METHODS = ("full", "lora", "qlora")
UNKNOWN_METHODS = ["qlora8", "adapter", "Full-finetune", "dora"]


# Reference answers: they never leave the grading worker.
def bytes_per_param(dtype):
    if dtype not in BYTES:
        raise ValueError(f"unknown dtype {dtype!r}")
    return BYTES[dtype]


def memory_for_inference(num_params, dtype="float16"):
    return num_params * bytes_per_param(dtype)


def memory_for_training(num_params):
    parts = {key: num_params * size for key, size in TRAINING_BYTES.items()}
    parts["total"] = sum(parts.values())
    return parts


def nf4_bits_per_param(double_quant=True, block_size=64, scale_block_size=256):
    if double_quant:
        return 4 + 8 / block_size + 32 / (block_size * scale_block_size)
    return 4 + 32 / block_size


def memory_for_finetuning(num_params, method, adapter_params=0, double_quant=True):
    if method == "full":
        base, adapter = memory_for_training(num_params)["total"], 0
    elif method == "lora":
        base, adapter = memory_for_inference(num_params, "bfloat16"), memory_for_training(adapter_params)["total"]
    elif method == "qlora":
        base = num_params * nf4_bits_per_param(double_quant) / 8
        adapter = memory_for_training(adapter_params)["total"]
    else:
        raise ValueError(f"unknown method {method!r}")
    return {"base": base, "adapter": adapter, "total": base + adapter}


# ------------------------------------------------------------------------------------------- inputs
def _param_counts(seed):
    """Parameter counts from GPT-2 small to beyond 70B, odd ones included (int4 gives half bytes)."""
    rng = random.Random(seed)
    counts = [rng.randint(10**6, 10**8), rng.randint(10**8, 10**10) | 1, rng.randint(10**10, 2 * 10**11)]
    return [124_439_808, 7_000_000_000] + counts


def _refused(record, name, what, kind, unknown, why=""):
    """The call passed an input the answer cannot know (a `kind`, `unknown`): it must have raised ValueError (or
    KeyError) with a message naming it, as the notebook asks."""
    kinds = raised_kind(record)
    if kinds and ("ValueError" in kinds or "KeyError" in kinds):
        error = part(record, "raised")
        message = text(error, "message")
        if unknown not in message:
            fail(f"{what} raised {text(error, 'type')} with the message {message!r}, which does not name the {kind}: "
                 f"say which {kind} was not recognised (e.g. f\"unknown {kind} {{{kind}!r}}\").")
        return
    if kinds and "NotImplementedError" in kinds:
        fail(f"{name} is not implemented yet: replace `raise NotImplementedError()` with your code.")
    if kinds:
        error = record["raised"]
        fail(f"{what} raised {error['type']}: {error['message']}; an unknown {kind} should raise ValueError (or "
             "KeyError) with a message naming it.")
    fail(f"{what} returned {call(record, what)!r} for a {kind} it does not know; it should raise ValueError (or "
         f"KeyError){why}.")


def _unknown(seed, choices):
    """Every decoy, in an order drawn from the seed: an answer that refuses only some of them always shows."""
    return random.Random(seed).sample(choices, len(choices))


# ------------------------------------------------------------------------------------ bytes_per_param
def ask_bytes_per_param(ctx):
    unknown = _unknown(ctx.seed, UNKNOWN_DTYPES)
    return calls_request("bytes_per_param", [spec(d) for d in [*BYTES, *unknown]]), {"unknown": unknown}


def judge_bytes_per_param(data, secret):
    unknown = secret["unknown"]
    got_calls = records(data, "bytes_per_param", len(BYTES) + len(unknown))
    for (dtype, expected), record in zip(BYTES.items(), got_calls):
        what = f"bytes_per_param({dtype!r})"
        got = as_number(call(record, what), what)
        if got == 8 * expected:
            fail(f"{what} returned {got:g}: that is bits; the answer is in bytes ({expected:g}).")
        if not math.isclose(got, expected, rel_tol=1e-9):
            fail(f"{what}: expected {expected:g} bytes, got {got:g}.")
    for dtype, record in zip(unknown, got_calls[len(BYTES):]):
        _refused(record, "bytes_per_param", f"bytes_per_param({dtype!r})", "dtype", dtype,
                 ", so a typo can't silently turn into a memory figure")
    return (f"bytes_per_param: float32 4, float16 2, bfloat16 2, int8 1, int4 0.5, and {len(unknown)} unknown dtypes "
            "raise, naming the dtype.")


# ------------------------------------------------------------------------------- memory_for_inference
def _helpers(counts, *names):
    """The reference helpers an answer may call, as tables over the parameter counts of this check."""
    dtypes = list(BYTES)
    out = {}
    if "bytes_per_param" in names:
        out["bytes_per_param"] = table("bytes_per_param", ["dtype"], bytes_per_param, [(d,) for d in dtypes])
    if "memory_for_inference" in names:
        out["memory_for_inference"] = table("memory_for_inference", ["num_params", "dtype"], memory_for_inference,
                                            [(n, d) for n in counts for d in dtypes], {"dtype": "float16"})
    if "memory_for_training" in names:
        out["memory_for_training"] = table("memory_for_training", ["num_params"], memory_for_training,
                                           [(n,) for n in counts])
    if "to_gb" in names:
        out["to_gb"] = table("to_gb", ["num_bytes"], lambda b: b / 1e9,
                             [(n * k,) for n in counts for k in (0.5, 1, 2, 4, 12)])
    if "nf4_bits_per_param" in names:
        out["nf4_bits_per_param"] = table("nf4_bits_per_param", ["double_quant", "block_size", "scale_block_size"],
                                          nf4_bits_per_param, [(dq, 64, 256) for dq in (True, False)],
                                          {"double_quant": True, "block_size": 64, "scale_block_size": 256})
    return out


def ask_memory_for_inference(ctx):
    counts = _param_counts(ctx.seed)
    specs = []
    for n in counts:
        specs += [spec(n, dtype) for dtype in BYTES] + [spec(n), spec(n, dtype="int8")]
    request = calls_request("memory_for_inference", specs, _helpers(counts, "bytes_per_param"))
    return request, {"counts": counts, "seed": ctx.seed}


def judge_memory_for_inference(data, secret):
    counts, seed = secret["counts"], secret["seed"]
    got_calls = iter(records(data, "memory_for_inference", len(counts) * (len(BYTES) + 2)))
    for n in counts:
        for dtype, size in BYTES.items():
            what = f"memory_for_inference({n:_}, {dtype!r})"
            got = as_number(call(next(got_calls), what), what)
            expected = n * size
            if math.isclose(got, expected / 1e9, rel_tol=1e-6) or math.isclose(got, expected / 2**30, rel_tol=1e-6):
                fail(f"{what} returned {got:,.3f}: that looks like GB; the answer is in bytes ({expected:,.1f}). "
                     f"Convert with to_gb only when you print. (seed {seed})")
            if math.isclose(got, 8 * expected, rel_tol=1e-9):
                fail(f"{what} returned {got:,.0f}: that is bits; expected {expected:,.1f} bytes. (seed {seed})")
            if abs(got - expected) > 1:  # 1 byte of slack: rounding a packed int4 count up is fine
                fail(f"{what}: expected {expected:,.1f} bytes ({size:g} per parameter), got {got:,.1f}. (seed {seed})")
        what = f"memory_for_inference({n:_}) with the default dtype"
        got = as_number(call(next(got_calls), what), what)
        if abs(got - 2 * n) > 1:
            fail(f"{what}: the default dtype is float16, so expected {2 * n:,} bytes, got {got:,.1f}. (seed {seed})")
        what = f"memory_for_inference({n:_}, dtype='int8')"
        got = as_number(call(next(got_calls), what), what)
        if abs(got - n) > 1:
            fail(f"{what} (dtype passed by keyword): expected {n:,} bytes, got {got:,.1f}. (seed {seed})")
    return f"memory_for_inference: every dtype on {len(counts)} parameter counts (seed {seed})."


# --------------------------------------------------------------------------------- memory_for_training
def ask_memory_for_training(ctx):
    counts = _param_counts(ctx.seed)
    helpers = _helpers(counts, "bytes_per_param", "memory_for_inference", "to_gb")
    return calls_request("memory_for_training", [spec(n) for n in counts], helpers), {"counts": counts,
                                                                                       "seed": ctx.seed}


def _parts(got, what, keys):
    if not isinstance(got, dict):
        fail(f"{what} should return a dict, but it returned {describe(got)}.")
    missing = [key for key in keys if key not in got]
    if missing:
        fail(f"{what} returned a dict without the key(s) {missing}; it needs {list(keys)} (it has "
             f"{[k for k in got][:8]}).")
    return {key: as_number(got[key], f"{what}[{key!r}]") for key in keys}


def judge_memory_for_training(data, secret):
    counts, seed = secret["counts"], secret["seed"]
    keys = [*TRAINING_BYTES, "total"]
    for n, record in zip(counts, records(data, "memory_for_training", len(counts))):
        what = f"memory_for_training({n:_})"
        values = _parts(call(record, what), what, keys)
        for key, size in TRAINING_BYTES.items():
            if abs(values[key] - n * size) > 1:
                fail(f"{what}[{key!r}]: expected {n * size:,} bytes ({size} per parameter), got "
                     f"{values[key]:,.1f} ({values[key] / n:g} per parameter). (seed {seed})")
        if abs(values["total"] - 12 * n) > 1:
            fail(f"{what}['total']: expected {12 * n:,} bytes (2 + 2 + 4 + 4 = 12 per parameter), got "
                 f"{values['total']:,.1f} ({values['total'] / n:g} per parameter). (seed {seed})")
    return f"memory_for_training: all four parts and the total on {len(counts)} parameter counts (seed {seed})."


# ------------------------------------------------------------------------------------------- to_gb
def ask_to_gb(ctx):
    rng = random.Random(ctx.seed)
    sizes = [84_000_000_000, 248_879_616, 1] + [rng.randint(1, 10**12) for _ in range(5)]
    return calls_request("to_gb", [spec(b) for b in sizes]), {"sizes": sizes, "seed": ctx.seed}


def judge_to_gb(data, secret):
    sizes, seed = secret["sizes"], secret["seed"]
    for num_bytes, record in zip(sizes, records(data, "to_gb", len(sizes))):
        what = f"to_gb({num_bytes:_})"
        got = as_number(call(record, what), what)
        expected = num_bytes / 1e9
        if math.isclose(got, num_bytes / 2**30, rel_tol=1e-9) and num_bytes > 1:
            fail(f"{what} returned {got!r}: that is GiB (2**30 bytes); the course uses decimal GB, 1 GB = 10**9 "
                 f"bytes, so expected {expected!r}.")
        if not math.isclose(got, expected, rel_tol=1e-9):
            fail(f"{what}: expected {expected!r} (bytes / 1e9, not rounded), got {got!r}. (seed {seed})")
    return f"to_gb: {len(sizes)} sizes, decimal GB (seed {seed})."


# ------------------------------------------------------------------------------- nf4_bits_per_param
LESSON_NF4 = [((), {}, 4 + 8 / 64 + 32 / (64 * 256), "nf4_bits_per_param()"),
              ((True,), {}, 4 + 8 / 64 + 32 / (64 * 256), "nf4_bits_per_param(True)"),
              ((False,), {}, 4.5, "nf4_bits_per_param(False)"),
              ((), {"double_quant": False}, 4.5, "nf4_bits_per_param(double_quant=False)")]


def ask_nf4_bits_per_param(ctx):
    rng = random.Random(ctx.seed)
    cases = [(rng.choice([32, 64, 128, 256, 1024]), rng.choice([64, 128, 256, 512])) for _ in range(4)]
    specs = [spec(*args, **kwargs) for args, kwargs, _, _ in LESSON_NF4]
    specs += [spec(double_quant=dq, block_size=b, scale_block_size=s) for b, s in cases for dq in (True, False)]
    return calls_request("nf4_bits_per_param", specs), {"cases": cases, "seed": ctx.seed}


def judge_nf4_bits_per_param(data, secret):
    cases, seed = secret["cases"], secret["seed"]
    got_calls = iter(records(data, "nf4_bits_per_param", len(LESSON_NF4) + 2 * len(cases)))
    for _, _, expected, what in LESSON_NF4:
        got = as_number(call(next(got_calls), what), what)
        if math.isclose(got, expected / 8, rel_tol=1e-9):
            fail(f"{what} returned {got!r}: that is bytes; the answer is in bits ({expected!r}).")
        if math.isclose(got, 4.125, rel_tol=1e-9) and expected != 4.5:
            fail(f"{what} returned 4.125 = 4 + 8/64: the 8-bit block scales need float32 constants of their own, "
                 f"one per 256 blocks, 32/(64*256) bit more per weight: expected {expected!r}.")
        if not math.isclose(got, expected, rel_tol=1e-9):
            fail(f"{what}: expected {expected!r} bits per weight, got {got!r}.")
    for block_size, scale_block_size in cases:
        for dq in (True, False):
            what = (f"nf4_bits_per_param(double_quant={dq}, block_size={block_size}, "
                    f"scale_block_size={scale_block_size})")
            got = as_number(call(next(got_calls), what), what)
            expected = nf4_bits_per_param(dq, block_size, scale_block_size)
            if not math.isclose(got, expected, rel_tol=1e-9):
                fail(f"{what}: expected {expected!r} (4 bits + the scales' bits spread over the weights they serve), "
                     f"got {got!r}. (seed {seed})")
    return (f"nf4_bits_per_param: 4.5 bits, 4.126953125 with double quantization, and {len(cases)} other block "
            f"sizes (seed {seed}).")


# ---------------------------------------------------------------------------- memory_for_finetuning
def _finetuning_cases(seed):
    lesson = [(7_000_000_000, 16_777_216), (8_030_261_248, 27_262_976), (124_439_808, 294_912)]
    rng = random.Random(seed)
    fresh = [(rng.randint(10**8, 2 * 10**11), rng.randint(10**5, 10**8)) for _ in range(4)]
    fresh.append((rng.randint(10**6, 10**8) | 1, rng.randint(1, 10**4) | 1))
    return lesson + fresh


def _finetuning_calls(n, a):
    return [("full", {}, f"memory_for_finetuning({n:_}, 'full')"),
            ("full", {"adapter_params": a}, f"memory_for_finetuning({n:_}, 'full', adapter_params={a:_})"),
            ("lora", {"adapter_params": a}, f"memory_for_finetuning({n:_}, 'lora', adapter_params={a:_})"),
            ("qlora", {"adapter_params": a}, f"memory_for_finetuning({n:_}, 'qlora', adapter_params={a:_})"),
            ("qlora", {"adapter_params": a, "double_quant": False},
             f"memory_for_finetuning({n:_}, 'qlora', adapter_params={a:_}, double_quant=False)")]


def ask_memory_for_finetuning(ctx):
    cases = _finetuning_cases(ctx.seed)
    unknown = _unknown(ctx.seed, UNKNOWN_METHODS)
    specs = [spec(n, method, **kwargs) for n, a in cases for method, kwargs, _ in _finetuning_calls(n, a)]
    specs += [spec(7_000_000_000, method, adapter_params=1000) for method in unknown]
    counts = sorted({n for n, _ in cases} | {a for _, a in cases} | {0, 1000})  # 0: an answer may price no adapter
    helpers = _helpers(counts, "bytes_per_param", "memory_for_inference", "memory_for_training", "to_gb",
                       "nf4_bits_per_param")
    return calls_request("memory_for_finetuning", specs, helpers), {"cases": cases, "unknown": unknown,
                                                                     "seed": ctx.seed}


EXPLAIN = {
    "full": {"base": "12 bytes per parameter: memory_for_training's total",
             "adapter": "full finetuning trains no adapter, whatever adapter_params says: 0"},
    "lora": {"base": "the frozen base in bfloat16, 2 bytes per parameter: no gradients, no Adam states",
             "adapter": "the adapter trains like a full model, 12 bytes per adapter parameter"},
    "qlora": {"base": "the frozen base in NF4, nf4_bits_per_param({}) / 8 bytes per parameter",
              "adapter": "the adapter trains like a full model, 12 bytes per adapter parameter"},
}


def judge_memory_for_finetuning(data, secret):
    cases, seed = secret["cases"], secret["seed"]
    unknown = secret["unknown"]
    got_calls = iter(records(data, "memory_for_finetuning", len(_finetuning_calls(1, 1)) * len(cases) + len(unknown)))
    for n, a in cases:
        for method, kwargs, what in _finetuning_calls(n, a):
            got = _parts(call(next(got_calls), what), what, ("base", "adapter", "total"))
            want = memory_for_finetuning(n, method, **kwargs)
            for key in ("base", "adapter"):
                if abs(got[key] - want[key]) > 1 + 1e-9 * want[key]:
                    per = got[key] / (n if key == "base" else max(a, 1))
                    explain = EXPLAIN[method][key].format(kwargs.get("double_quant", True))
                    fail(f"{what}[{key!r}]: expected {want[key]:,.1f} bytes ({explain}), got {got[key]:,.1f} "
                         f"({per:.6g} bytes per {'parameter' if key == 'base' else 'adapter parameter'}). (seed {seed})")
            if abs(got["total"] - want["total"]) > 2 + 1e-9 * want["total"]:
                fail(f"{what}['total']: expected base + adapter = {want['total']:,.1f} bytes, got {got['total']:,.1f}."
                     f" (seed {seed})")
    for method in unknown:
        _refused(next(got_calls), "memory_for_finetuning",
                 f"memory_for_finetuning(7_000_000_000, {method!r}, adapter_params=1_000)", "method", method)
    return (f"memory_for_finetuning: full (with and without an adapter size passed), LoRA and QLoRA (with and without "
            f"double quantization) on {len(cases)} (model, adapter) sizes, and {len(unknown)} unknown methods raise "
            f"(seed {seed}).")
