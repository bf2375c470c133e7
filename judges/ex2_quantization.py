"""Exercise 2's judges (quantization by hand).

The quantize checks grade behaviour, not one formula: int8 codes in range, a scale that follows the
rule, every weight within half a step of where it came from, the full int8 range for zero-point, and
sane results (no NaN or inf) on the degenerate inputs the notebook describes. Both zero-point
conventions pass: q = round(w/s) + zp with an integer zp, and q = round(w/s + zp). The dequantize
checks feed in reference-quantized inputs (made here, sent as tensors), so each function is graded on its
own; zero_point_dequantize gets zero points of both conventions, whole and fractional, in every grading.
Every input is drawn again from the secret's seed when judging: the secret stays plain JSON."""
import json
import math
import random

import torch

from graders import _wire
from judges._core import MetaTensor, Opaque, as_number, call, calls_request, changed_inputs, fail, records, spec

LESSON = [-0.8, 0.3, 1.2, -0.5]
LESSON_Q = [-85, 32, 127, -53]
OUTLIER = [-0.1, 0.05, 0.02, -0.03, 8.5]
FLOAT_DTYPES = ("float64", "float32", "float16", "bfloat16")


# Reference answers: they never leave the grading worker (the dequantize checks use them to make their inputs).
def absmax_quantize(w):
    max_abs = w.abs().max().item()
    scale = max_abs / 127 if max_abs > 0 else 1.0
    return torch.round(w / scale).clamp(-127, 127).to(torch.int8), scale


def absmax_dequantize(q, scale):
    return q.float() * scale


def zero_point_quantize(w):
    lo, hi = w.min().item(), w.max().item()
    scale = (hi - lo) / 255 if hi > lo else (abs(lo) or 1.0)
    zero_point = -128 - round(lo / scale)
    return torch.round(w / scale).add(zero_point).clamp(-128, 127).to(torch.int8), scale, zero_point


def zero_point_dequantize(q, scale, zero_point):
    return (q.float() - zero_point) * scale


def absmax_quantize_blocks(w, block_size=64):
    flat = w.reshape(-1)
    blocks = flat.split(block_size)
    scales = torch.stack([b.abs().max() for b in blocks]).float() / 127
    scales = torch.where(scales > 0, scales, torch.ones_like(scales))
    per_value = scales.repeat_interleave(torch.tensor([len(b) for b in blocks]))
    q = torch.round(flat / per_value).clamp(-127, 127).to(torch.int8)
    return q.reshape(w.shape), scales


def absmax_dequantize_blocks(q, scales, block_size=64):
    flat = q.reshape(-1).float()
    index = torch.arange(flat.numel()) // block_size
    return (flat * scales.reshape(-1).float()[index]).reshape(q.shape)


def reference_gpt2_c_attn(config: dict, seed: int) -> list:
    """c_attn's weight of every block of the small GPT-2 built from `config` and `seed`, encoded: the same
    model the collector hands the answer (graders.ex2_quantization.small_gpt2 builds both)."""
    from graders.ex2_quantization import small_gpt2
    model = small_gpt2(config, seed)
    return [_wire.encode(block.attn.c_attn.weight.detach().clone()) for block in model.transformer.h]


# ------------------------------------------------------------------------------------------- inputs
def _random_tensors(seed, count=8):
    """Random shapes (1 to 3 dims), magnitudes from 1e-3 to 1e2, some shifted, skewed or with an outlier."""
    rng, gen = random.Random(seed), torch.Generator().manual_seed(seed)
    tensors = []
    for i in range(count):
        shape = tuple(rng.randint(1, 40) for _ in range(rng.randint(1, 3)))
        shape = shape if math.prod(shape) >= 8 else shape + (8,)
        size = 10 ** rng.uniform(-3, 2)
        w = torch.randn(shape, generator=gen) * size
        kind = i % 4
        if kind == 1:  # shifted: mostly one sign
            w = w + rng.uniform(-3, 3) * size
        elif kind == 2:  # all positive, like the lesson's asymmetric example
            w = w.abs() + rng.uniform(0, 2) * size
        elif kind == 3:  # one outlier
            w.view(-1)[rng.randrange(w.numel())] = rng.choice([-1, 1]) * rng.uniform(10, 50) * size
        tensors.append(w)
    return tensors


def _small_shape(rng):
    return tuple(rng.randint(1, 6) for _ in range(rng.randint(1, 3)))


def _describe(w):
    return f"a {tuple(w.shape)} tensor in [{w.min().item():.4g}, {w.max().item():.4g}]"


# ------------------------------------------------------------------------------ reading what came back
def _kind(got) -> str:
    """The type a message names (as the old single-process grader did: type(x).__name__)."""
    if isinstance(got, Opaque):
        return got.type_name.rsplit(".", 1)[-1]
    if isinstance(got, MetaTensor):
        return "Tensor"
    return type(got).__name__


def _dtype(t) -> str:
    return f"torch.{t.dtype}" if isinstance(t, MetaTensor) else str(t.dtype)


def _readable(t, what):
    """A tensor whose values came over (not one on the meta device or of a dtype the wire does not carry)."""
    if isinstance(t, MetaTensor):
        fail(f"{what}: the grader could not read the values of the {_dtype(t)} tensor on {t.device} that came "
             "back; return an ordinary tensor.")
    return t


def _unpack(result, n, what):
    if not isinstance(result, (tuple, list)) or len(result) != n:
        shape = f"a {_kind(result)}" + (f" of length {len(result)}" if isinstance(result, (tuple, list)) else "")
        fail(f"{what} should return a tuple of {n} values, got {shape}.")
    return result


def _untouched(record, what):
    if changed_inputs(record):
        fail(f"{what} changed its input tensor in place; work on a new tensor (w / scale, not w /= scale).")


def _codes(q, w, what, lo, hi):
    if not isinstance(q, (torch.Tensor, MetaTensor)):
        fail(f"{what}: the quantized values should be a torch tensor, got {_kind(q)}.")
    if _dtype(q) != "torch.int8":
        fail(f"{what}: the quantized values should have dtype torch.int8, got {_dtype(q)}. "
             "(Convert with .to(torch.int8) after rounding and clamping.)")
    if tuple(q.shape) != tuple(w.shape):
        fail(f"{what}: the quantized tensor should have the input's shape {tuple(w.shape)}, got {tuple(q.shape)}.")
    _readable(q, what)
    if q.min().item() < lo or q.max().item() > hi:
        fail(f"{what}: the codes should lie in [{lo}, {hi}], got [{q.min().item()}, {q.max().item()}].")


def _float_tensor(out, what, hint=""):
    """A floating-point tensor of `shape`, with its values."""
    is_tensor = isinstance(out, (torch.Tensor, MetaTensor))
    floating = is_tensor and (out.dtype in FLOAT_DTYPES if isinstance(out, MetaTensor) else out.is_floating_point())
    if not floating:
        got = _dtype(out) if is_tensor else _kind(out)
        fail(f"{what} should return a floating-point tensor, got {got}{hint}.")
    return out


def _within_half_step(deq, w, scale, what, seed):
    """|dequantized - w| <= scale / 2, with room for float32 arithmetic."""
    err = (deq - w.double()).abs()
    tol = scale * 1e-3 + 1e-6 * w.abs().max().item()
    worst = err.max().item()
    if not worst <= scale / 2 + tol:
        i = int(err.reshape(-1).argmax())
        fail(f"{what}: after dequantizing, a weight should be at most scale/2 = {scale / 2:.4g} from where it "
             f"started, but {w.reshape(-1)[i].item():.6g} came back as {deq.reshape(-1)[i].item():.6g} "
             f"(off by {worst:.4g}, {worst / scale:.2f} steps). Round to the nearest integer (torch.round), "
             f"don't truncate, and clamp before converting to int8. (seed {seed})")


# ------------------------------------------------------------------------------------------- absmax
def _absmax_cases(seed):
    """The lesson's example, [0.5, -2.0, 1.0] (max|w| is not max w), an outlier, random tensors, all zeros."""
    zeros = torch.zeros(_small_shape(random.Random(seed + 1)))
    return [torch.tensor(LESSON), torch.tensor([0.5, -2.0, 1.0]), torch.tensor(OUTLIER), *_random_tensors(seed), zeros]


def ask_absmax_quantize(ctx):
    request = calls_request("absmax_quantize", [spec(w) for w in _absmax_cases(ctx.seed)], watch_inputs=True)
    return request, {"seed": ctx.seed}


def judge_absmax_quantize(data, secret):
    seed = secret["seed"]
    cases = _absmax_cases(seed)
    got_calls = iter(zip(cases, records(data, "absmax_quantize", len(cases))))

    def run():
        w, record = next(got_calls)
        what = f"absmax_quantize({_describe(w)})"
        q, scale = _unpack(call(record, what), 2, what)
        _untouched(record, what)
        _codes(q, w, what, -127, 127)
        scale = as_number(scale, f"{what}: the scale")
        if not (math.isfinite(scale) and scale > 0):
            fail(f"{what}: the scale should be a finite positive number, got {scale!r}.")
        return w, q, scale, what

    w, q, scale, what = run()
    if q.tolist() != LESSON_Q:
        fail(f"absmax_quantize({LESSON}): expected the codes {LESSON_Q}, got {q.tolist()}.")
    if not math.isclose(scale, 1.2 / 127, rel_tol=1e-5):
        fail(f"absmax_quantize({LESSON}): expected the scale 1.2/127 = {1.2 / 127:.6g}, got {scale:.6g}.")

    w, q, scale, what = run()
    if not math.isclose(scale, 2.0 / 127, rel_tol=1e-5):
        hint = ""
        if math.isclose(scale, 1 / 127, rel_tol=1e-5):
            hint = " That is max(w)/127: use the largest absolute value, max|w|."
        fail(f"absmax_quantize([0.5, -2.0, 1.0]): the largest magnitude is |-2.0| = 2.0, so the scale should be "
             f"2/127 = {2 / 127:.6g}, got {scale:.6g}.{hint}")

    for _ in range(len(cases) - 3):  # the outlier and the random tensors
        w, q, scale, what = run()
        expected = w.abs().max().item() / 127
        if not math.isclose(scale, expected, rel_tol=1e-5):
            fail(f"{what}: the scale should be max|w|/127 = {expected:.6g}, got {scale:.6g}. (seed {seed})")
        _within_half_step(q.double() * scale, w, scale, what, seed)

    w, q, scale, what = run()  # all zeros
    if q.ne(0).any():
        fail(f"{what}: an all-zero tensor should quantize to all-zero codes, got {q.reshape(-1)[:8].tolist()}...")
    if (q.double() * scale).ne(0).any():
        fail(f"{what}: an all-zero tensor should dequantize to exact zeros.")
    return (f"absmax_quantize: the lesson's example, max|w| (not max w), an outlier, {len(cases) - 4} random tensors "
            f"and an all-zero one (seed {seed}).")


def _absmax_dequantize_calls(seed):
    """(w, q, scale, scale as sent, what) for each call: reference codes, the scale as a float and as a 0-d tensor."""
    out = []
    for w in [torch.tensor(LESSON), torch.zeros(3)] + _random_tensors(seed):
        q, scale = absmax_quantize(w)
        for scale_as in (scale, torch.tensor(scale, dtype=torch.float32)):
            kind = "a Python float" if isinstance(scale_as, float) else "a 0-d tensor"
            what = f"absmax_dequantize(q, scale) for the codes of {_describe(w)}, scale as {kind}"
            out.append((w, q, scale, scale_as, what))
    return out


def ask_absmax_dequantize(ctx):
    specs = [spec(q, scale_as) for _, q, _, scale_as, _ in _absmax_dequantize_calls(ctx.seed)]
    return calls_request("absmax_dequantize", specs, watch_inputs=True), {"seed": ctx.seed}


def judge_absmax_dequantize(data, secret):
    seed = secret["seed"]
    cases = _absmax_dequantize_calls(seed)
    for (w, q, scale, scale_as, what), record in zip(cases, records(data, "absmax_dequantize", len(cases))):
        expected = q.double() * scale
        out = _float_tensor(call(record, what), what, ": don't convert back to int8")
        if tuple(out.shape) != tuple(q.shape):
            fail(f"{what}: expected the shape {tuple(q.shape)}, got {tuple(out.shape)}.")
        if changed_inputs(record):
            fail(f"{what} changed q{'' if isinstance(scale_as, float) else ' (or the scale)'} in place.")
        _readable(out, what)
        err = (out.double() - expected).abs().max().item()
        if not err <= 1e-5 * max(expected.abs().max().item(), scale) + 1e-12:
            i = int((out.double() - expected).abs().reshape(-1).argmax())
            fail(f"{what}: q * scale should give {expected.reshape(-1)[i].item():.6g} for the code "
                 f"{int(q.reshape(-1)[i])} (scale {scale:.4g}), got {out.reshape(-1)[i].item():.6g}. (seed {seed})")
    return (f"absmax_dequantize: {len(cases) // 2} reference-quantized tensors, scale as float and as tensor "
            f"(seed {seed}).")


# ------------------------------------------------------------------------------------------ zero-point
def _zero_point_cases(seed):
    """(tensors that span a range, constant tensors): the lesson's, random ones; all zeros and one value."""
    spread = [torch.tensor(LESSON), torch.tensor([0.1, 0.3, 0.5, 0.8, 0.2, 0.6, 0.9, 0.15]),
              torch.tensor(OUTLIER)] + _random_tensors(seed)
    rng = random.Random(seed + 1)
    shape = _small_shape(rng)
    value = rng.choice([-1, 1]) * 10 ** rng.uniform(-3, 2)
    return spread, [torch.zeros(shape), torch.full(shape, value), torch.tensor([value])]


def ask_zero_point_quantize(ctx):
    spread, constant = _zero_point_cases(ctx.seed)
    request = calls_request("zero_point_quantize", [spec(w) for w in spread + constant], watch_inputs=True)
    return request, {"seed": ctx.seed}


def judge_zero_point_quantize(data, secret):
    seed = secret["seed"]
    spread, constant = _zero_point_cases(seed)
    got_calls = records(data, "zero_point_quantize", len(spread) + len(constant))

    def run(w, record):
        what = f"zero_point_quantize({_describe(w)})"
        q, scale, zero_point = _unpack(call(record, what), 3, what)
        _untouched(record, what)
        _codes(q, w, what, -128, 127)
        scale = as_number(scale, f"{what}: the scale")
        zero_point = as_number(zero_point, f"{what}: the zero point")
        if not (math.isfinite(scale) and scale > 0):
            fail(f"{what}: the scale should be a finite positive number, got {scale!r}.")
        if not math.isfinite(zero_point):
            fail(f"{what}: the zero point should be a finite number, got {zero_point!r}.")
        deq = (q.double() - zero_point) * scale
        return q, scale, zero_point, deq, what

    for w, record in zip(spread, got_calls):
        q, scale, zero_point, deq, what = run(w, record)
        lo, hi = w.min().item(), w.max().item()
        expected = (hi - lo) / 255
        if not math.isclose(scale, expected, rel_tol=1e-5):
            fail(f"{what}: the scale should be (max - min)/255 = {expected:.6g}, got {scale:.6g}. (seed {seed})")
        # -128 and 127 exactly, give or take one code where float32 rounding meets a tie (x.5)
        if q.min().item() > -127 or q.max().item() < 126:
            fail(f"{what}: the smallest weight should map to -128 and the largest to 127 (the full int8 range), "
                 f"but the codes span [{q.min().item()}, {q.max().item()}] (zero point {zero_point:g}). "
                 f"Check the zero point (its sign puts the minimum on -128) and clamp to [-128, 127] before converting "
                 f"to int8. (seed {seed})")
        _within_half_step(deq, w, scale, what + ", dequantized as (q - zero_point) * scale", seed)

    for w, record in zip(constant, got_calls[len(spread):]):
        q, scale, zero_point, deq, what = run(w, record)
        if not torch.isfinite(deq).all() or not torch.allclose(deq, w.double(), rtol=1e-6, atol=1e-12):
            fail(f"{what}: every weight is {w.reshape(-1)[0].item():.6g}; the notebook's rule (max == min: let "
                 f"the value set the scale, or 1.0 when it is 0) brings it back exactly, but (q - zero_point) * "
                 f"scale gives {deq.reshape(-1)[0].item():.6g} (scale {scale:.4g}, zero point {zero_point:g}). "
                 f"(seed {seed})")
    return (f"zero_point_quantize: {len(spread)} tensors incl. the lesson's and {len(spread) - 3} random ones use the "
            f"full range within half a step; constant and all-zero tensors come back exactly (seed {seed}).")


def zero_point_quantize_float(w):
    """The other convention the notebook accepts: a non-integer zero point, rounded once with w / scale."""
    lo, hi = w.min().item(), w.max().item()
    scale = (hi - lo) / 255 if hi > lo else (abs(lo) or 1.0)
    zero_point = -128 - lo / scale
    return torch.round(w / scale + zero_point).clamp(-128, 127).to(torch.int8), scale, zero_point


def _fractional_zero_points(seed, count=3):
    """Codes, scales and zero points with a fractional part between 0.25 and 0.75, of either sign: always drawn, so
    that a zero point truncated (int(), .long()) or rounded to an integer is off by at least a quarter of a step."""
    rng, gen = random.Random(seed + 7), torch.Generator().manual_seed(seed + 7)
    out = []
    for i in range(count):
        whole = rng.randint(-200, -130) if i == 0 else rng.randint(-60, 60) if i == 1 else rng.randint(130, 200)
        zero_point = whole + rng.choice([-1, 1]) * rng.uniform(0.25, 0.75)
        shape = _small_shape(rng) + (rng.randint(2, 6),)
        q = torch.randint(-128, 128, shape, generator=gen, dtype=torch.int8)
        out.append((q, 10 ** rng.uniform(-4, 0), zero_point))
    return out


def _zero_point_dequantize_calls(seed):
    """(q, scale, zero_point, scale as sent, zero point as sent, what) for each call. Both conventions the notebook
    allows: integer zero points (reference codes of the lesson's and random tensors) and non-integer ones (the
    same tensors quantized the other way, and codes with a zero point well away from any integer); the scale and
    the zero point as Python numbers and as 0-d tensors."""
    cases = []
    for w in [torch.tensor(LESSON), torch.tensor([0.1, 0.3, 0.5, 0.8]), torch.full((3,), 2.5)] + _random_tensors(seed):
        cases.append((*zero_point_quantize(w), w))
    for w in [torch.tensor([0.1, 0.3, 0.5, 0.8])] + _random_tensors(seed + 1, count=4):
        cases.append((*zero_point_quantize_float(w), w))
    cases += [(q, scale, zero_point, None) for q, scale, zero_point in _fractional_zero_points(seed)]
    out = []
    for q, scale, zero_point, w in cases:
        integer = isinstance(zero_point, int)
        forms = [(scale, zero_point, "Python numbers"),
                 (torch.tensor(scale, dtype=torch.float32),
                  torch.tensor(zero_point) if integer else torch.tensor(zero_point, dtype=torch.float64),
                  "0-d tensors")]
        for scale_as, zero_point_as, kind in forms:
            source = f"the codes of {_describe(w)}" if w is not None else f"{tuple(q.shape)} codes"
            what = (f"zero_point_dequantize(q, scale, zero_point) for {source} (scale {scale:.4g}, zero point "
                    f"{zero_point if integer else f'{zero_point:.4f}'}, as {kind})")
            out.append((q, scale, zero_point, scale_as, zero_point_as, what))
    return out


def ask_zero_point_dequantize(ctx):
    specs = [spec(q, s, z) for q, _, _, s, z, _ in _zero_point_dequantize_calls(ctx.seed)]
    return calls_request("zero_point_dequantize", specs, watch_inputs=True), {"seed": ctx.seed}


def judge_zero_point_dequantize(data, secret):
    seed = secret["seed"]
    cases = _zero_point_dequantize_calls(seed)
    for (q, scale, zero_point, scale_as, _, what), record in zip(cases, records(data, "zero_point_dequantize",
                                                                                 len(cases))):
        expected = (q.double() - zero_point) * scale
        out = _float_tensor(call(record, what), what)
        if tuple(out.shape) != tuple(q.shape):
            fail(f"{what}: expected the shape {tuple(q.shape)}, got {tuple(out.shape)}.")
        if changed_inputs(record):
            fail(f"{what} changed q{'' if isinstance(scale_as, float) else ' (or the scale or the zero point)'} "
                 "in place.")
        _readable(out, what)
        err = (out.double() - expected).abs()
        if not err.max().item() <= 1e-5 * max(expected.abs().max().item(), scale) + 1e-12:
            i = int(err.reshape(-1).argmax())
            hint = "(Convert q to float before subtracting: int8 arithmetic overflows.)"
            if not isinstance(zero_point, int):
                whole = [math.trunc(zero_point), round(zero_point), math.floor(zero_point)]
                if any(torch.allclose(out.double(), (q.double() - z) * scale, rtol=1e-5, atol=1e-12) for z in whole):
                    hint = ("That is the zero point made a whole number: the notebook accepts zero points that are "
                            "not integers (the convention q = round(w / scale + zero_point)), so subtract it as it "
                            "comes, in floating point.")
            fail(f"{what}: (q - zero_point) * scale should give {expected.reshape(-1)[i].item():.6g} for the "
                 f"code {int(q.reshape(-1)[i])}, got {out.reshape(-1)[i].item():.6g}. {hint} (seed {seed})")
    floats = sum(not isinstance(c[2], int) for c in cases) // 2
    return (f"zero_point_dequantize: {len(cases) // 2 - floats} tensors with integer zero points and {floats} with "
            f"zero points that are not whole numbers, scale and zero point as numbers and as tensors (seed {seed}).")


# ------------------------------------------------------------------------------------ GPT-2's query block
def _gpt2_models(seed):
    """Three small GPT-2 configurations (n_embd from 8 to 64, 2 or 3 blocks), each with its weights' seed."""
    models = []
    for i in range(3):
        rng = random.Random(seed + i)
        n_head = rng.choice([2, 3, 4])
        n_embd = n_head * rng.choice([4, 8, 12, 16])
        config = {"n_embd": n_embd, "n_layer": rng.randint(2, 3), "n_head": n_head, "vocab_size": 100,
                  "n_positions": 32, "bos_token_id": 0, "eos_token_id": 0}
        models.append({"config": config, "seed": seed + i})
    return models


def _reference(ctx, task, **arguments):
    """A heavy reference in a process of its own where the engine gives one (here, if not)."""
    if ctx.reference is not None:
        return ctx.reference("ex2_quantization", task, **arguments)
    return json.loads(json.dumps(globals()[f"reference_{task}"](**arguments)))


def ask_query_block(ctx):
    models = _gpt2_models(ctx.seed)
    weights = [_reference(ctx, "gpt2_c_attn", config=m["config"], seed=m["seed"]) for m in models]
    return {"answer": "query_block", "models": models}, {"seed": ctx.seed, "models": models, "weights": weights}


def judge_query_block(data, secret):
    seed, models = secret["seed"], secret["models"]
    for model, encoded, record in zip(models, secret["weights"], records(data, "query_block", len(models))):
        n, n_layer = model["config"]["n_embd"], model["config"]["n_layer"]
        weights = [_wire.decode(w) for w in encoded]  # the judge's own model's c_attn weights, block by block
        what = f"query_block(model) on a small GPT-2 with n_embd={n} ({n_layer} blocks)"
        block = call(record, what)
        if not isinstance(block, (torch.Tensor, MetaTensor)):
            fail(f"{what} should return a tensor, got {_kind(block)}.")
        if tuple(block.shape) != (n, n):
            hint = ""
            if tuple(block.shape) in [(n, 3 * n), (3 * n, n)]:
                hint = (" That is all of c_attn (query, key and value): keep only the first n_embd output columns, "
                        "with n_embd read from model.config (a hard-coded 768 fits GPT-2 small only).")
            fail(f"{what}: expected a ({n}, {n}) tensor, got {tuple(block.shape)}.{hint} (seed {seed})")
        got = _readable(block, what)
        weight = weights[0]
        wanted = weight[:, :n]
        if torch.equal(got, wanted) or torch.equal(got, wanted.T):
            continue
        for name, part in [("key", weight[:, n:2 * n]), ("value", weight[:, 2 * n:])]:
            if torch.equal(got, part) or torch.equal(got, part.T):
                fail(f"{what}: that is the {name} block. c_attn's output columns hold query, key, value in that "
                     f"order. (seed {seed})")
        for j, other in enumerate(weights[1:], start=1):
            part = other[:, :n]
            if torch.equal(got, part) or torch.equal(got, part.T):
                fail(f"{what}: that is block {j}'s query block; the exercise asks for block 0. (seed {seed})")
        fail(f"{what}: the values are not block 0's query weights (the first n_embd output columns of "
             f"transformer.h[0].attn.c_attn.weight). (seed {seed})")
    return f"query_block: three small random GPT-2 configurations (seed {seed})."


# ------------------------------------------------------------------------------------- absmax per block
BLOCK_LESSON = [-0.8, 0.3, 1.2, -0.5, 0.1, -0.06, 0.02, 0.04]
BLOCK_LESSON_Q = [-85, 32, 127, -53, 127, -76, 25, 51]


def _block_cases(seed):
    """(tensor, block_size or None for the default) pairs: odd sizes, short last blocks, zero blocks, outliers."""
    rng, gen = random.Random(seed), torch.Generator().manual_seed(seed)
    cases = []
    for i in range(8):
        shape = tuple(rng.randint(1, 30) for _ in range(rng.randint(1, 3)))
        size = 10 ** rng.uniform(-3, 1)
        w = torch.randn(shape, generator=gen) * size
        block_size = rng.choice([1, 3, 7, 16, 33, 64, 100])
        flat = w.view(-1)
        if i % 3 == 1 and flat.numel() > block_size:  # one block of zeros
            start = block_size * rng.randrange(flat.numel() // block_size)
            flat[start:start + block_size] = 0
        if i % 3 == 2:  # an outlier
            flat[rng.randrange(flat.numel())] = rng.choice([-1, 1]) * rng.uniform(10, 50) * size
        cases.append((w, block_size))
    cases.append((torch.randn(rng.randint(65, 300), generator=gen) * 0.02, None))  # the default block size, 64
    return cases


def _matrix_case(seed):
    """A (6, 10) matrix in blocks of 7, in every grading: blocks run across rows in w.reshape(-1)'s order, so an
    answer that cuts each row (or column) into blocks of its own gets other blocks."""
    return torch.randn(6, 10, generator=torch.Generator().manual_seed(seed + 3)) * 0.1, 7


def _quantize_blocks_cases(seed):
    """The lesson's two blocks of 4 first, then a zero block, a short last block, a matrix, the random cases."""
    return [(torch.tensor(BLOCK_LESSON), 4), (torch.cat([torch.zeros(3), torch.tensor([0.5, -1.0, 0.25])]), 3),
            (torch.linspace(-1, 1, 130), 64), _matrix_case(seed)] + _block_cases(seed)


def _as_scales(scales, n_blocks, what):
    if isinstance(scales, (list, tuple)):
        scales = torch.tensor([as_number(s, f"{what}: a scale") for s in scales], dtype=torch.float64)
    if not isinstance(scales, (torch.Tensor, MetaTensor)):
        fail(f"{what}: the scales should be a tensor (one per block), got {_kind(scales)}.")
    if math.prod(scales.shape) != n_blocks:
        fail(f"{what}: expected {n_blocks} scales, one per block of consecutive values (the last block may be "
             f"shorter), got {math.prod(scales.shape)} (shape {tuple(scales.shape)}).")
    return _readable(scales, what).detach().reshape(-1).double()


def ask_absmax_quantize_blocks(ctx):
    specs = [spec(w) if bs is None else spec(w, bs) for w, bs in _quantize_blocks_cases(ctx.seed)]
    return calls_request("absmax_quantize_blocks", specs, watch_inputs=True), {"seed": ctx.seed}


def judge_absmax_quantize_blocks(data, secret):
    seed = secret["seed"]
    cases = _quantize_blocks_cases(seed)
    got_calls = records(data, "absmax_quantize_blocks", len(cases))

    def run(w, block_size, record):
        bs = 64 if block_size is None else block_size
        what = f"absmax_quantize_blocks({_describe(w)}" + (")" if block_size is None else f", block_size={bs})")
        q, scales = _unpack(call(record, what), 2, what)
        _untouched(record, what)
        _codes(q, w, what, -127, 127)
        n_blocks = -(-w.numel() // bs)
        scales = _as_scales(scales, n_blocks, what)
        if not (torch.isfinite(scales).all() and (scales > 0).all()):
            fail(f"{what}: every scale should be finite and positive (an all-zero block gets 1.0), got "
                 f"{scales[~(torch.isfinite(scales) & (scales > 0))][:3].tolist()}.")
        return q, scales, what, bs

    (w, block_size), *rest = cases
    q, scales, what, _ = run(w, block_size, got_calls[0])
    if q.tolist() != BLOCK_LESSON_Q or not torch.allclose(scales, torch.tensor([1.2 / 127, 0.1 / 127],
                                                                               dtype=torch.float64), rtol=1e-5):
        fail(f"absmax_quantize_blocks({BLOCK_LESSON}, block_size=4): expected the codes {BLOCK_LESSON_Q} and the "
             f"scales [1.2/127, 0.1/127] = [{1.2 / 127:.6g}, {0.1 / 127:.6g}], got {q.tolist()} and "
             f"{[round(s, 6) for s in scales.tolist()]}.")

    for (w, block_size), record in zip(rest, got_calls[1:]):
        q, scales, what, bs = run(w, block_size, record)
        flat, codes = w.reshape(-1).double(), q.reshape(-1).double()
        for b, start in enumerate(range(0, flat.numel(), bs)):
            block, block_codes = flat[start:start + bs], codes[start:start + bs]
            max_abs = block.abs().max().item()
            where = f"block {b} (values {start} to {start + len(block) - 1} of the flattened tensor)"
            if max_abs == 0:
                if block_codes.ne(0).any():
                    fail(f"{what}: {where} is all zeros, so its codes should be 0, got {block_codes[:6].tolist()}.")
                continue
            if not math.isclose(scales[b].item(), max_abs / 127, rel_tol=1e-5):
                fail(f"{what}: {where} should have the scale max|block| / 127 = {max_abs / 127:.6g}, got "
                     f"{scales[b].item():.6g}. Blocks are {bs} consecutive values of w.reshape(-1), the last one "
                     f"possibly shorter. (seed {seed})")
            _within_half_step(block_codes * scales[b].item(), block, scales[b].item(), f"{what}, {where}", seed)
    return (f"absmax_quantize_blocks: the lesson's two blocks, a zero block, a short last block, a matrix and "
            f"{len(cases) - 4} random tensors with odd sizes, zero blocks and outliers (seed {seed}).")


def _dequantize_blocks_calls(seed):
    """(q, scales, block size, the block size as passed or None, what): reference codes and scales."""
    out = []
    for w, block_size in [(torch.tensor(BLOCK_LESSON), 4), (torch.linspace(-1, 1, 130), 64),
                          _matrix_case(seed)] + _block_cases(seed):
        bs = 64 if block_size is None else block_size
        q, scales = absmax_quantize_blocks(w, bs)
        what = ("absmax_dequantize_blocks(q, scales" + (")" if block_size is None else f", block_size={bs})") +
                f" for the codes of {_describe(w)} ({scales.numel()} blocks)")
        out.append((q, scales, bs, block_size, what))
    return out


def ask_absmax_dequantize_blocks(ctx):
    specs = [spec(q, scales) if passed is None else spec(q, scales, passed)
             for q, scales, _, passed, _ in _dequantize_blocks_calls(ctx.seed)]
    return calls_request("absmax_dequantize_blocks", specs, watch_inputs=True), {"seed": ctx.seed}


def judge_absmax_dequantize_blocks(data, secret):
    seed = secret["seed"]
    cases = _dequantize_blocks_calls(seed)
    for (q, scales, bs, _, what), record in zip(cases, records(data, "absmax_dequantize_blocks", len(cases))):
        expected = absmax_dequantize_blocks(q, scales, bs).double()
        out = _float_tensor(call(record, what), what)
        if tuple(out.shape) != tuple(q.shape):
            fail(f"{what}: expected q's shape {tuple(q.shape)}, got {tuple(out.shape)}.")
        if changed_inputs(record):
            fail(f"{what} changed its inputs in place.")
        _readable(out, what)
        err = (out.double() - expected).abs()
        if not err.max().item() <= 1e-5 * expected.abs().max().item() + 1e-12:
            i = int(err.reshape(-1).argmax())
            fail(f"{what}: value {i} of the flattened tensor is in block {i // bs}, so it should be its code "
                 f"{int(q.reshape(-1)[i])} times scale {scales[i // bs].item():.4g} = {expected.reshape(-1)[i].item():.6g},"
                 f" got {out.reshape(-1)[i].item():.6g}. (seed {seed})")
    return (f"absmax_dequantize_blocks: {len(cases)} reference-quantized tensors, short last blocks included "
            f"(seed {seed}).")
