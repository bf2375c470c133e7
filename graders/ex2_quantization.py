"""Hidden checks for Exercise 2 (quantization by hand).

The quantize checks grade behaviour, not one formula: int8 codes in range, a scale that follows the
rule, every weight within half a step of where it came from, the full int8 range for zero-point, and
sane results (no NaN or inf) on the degenerate inputs the notebook describes. Both zero-point
conventions pass: q = round(w/s) + zp with an integer zp, and q = round(w/s + zp). The dequantize
checks feed in reference-quantized inputs, so each function is graded on its own."""
import math
import random

import torch

from graders._core import as_number, call, fail, fresh_seed, lookup, passed, seeded

LESSON = [-0.8, 0.3, 1.2, -0.5]
LESSON_Q = [-85, 32, 127, -53]
OUTLIER = [-0.1, 0.05, 0.02, -0.03, 8.5]


# Reference answers (dequantize checks use them to make their inputs).
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


# ---------------------------------------------------------------- inputs
def _random_tensors(seed, count=8):
    """Random shapes (1 to 3 dims), magnitudes from 1e-3 to 1e2, some shifted, skewed or with an outlier."""
    tensors = []
    with seeded(seed):
        for i in range(count):
            shape = tuple(random.randint(1, 40) for _ in range(random.randint(1, 3)))
            shape = shape if math.prod(shape) >= 8 else shape + (8,)
            size = 10 ** random.uniform(-3, 2)
            w = torch.randn(shape) * size
            kind = i % 4
            if kind == 1:  # shifted: mostly one sign
                w = w + random.uniform(-3, 3) * size
            elif kind == 2:  # all positive, like the lesson's asymmetric example
                w = w.abs() + random.uniform(0, 2) * size
            elif kind == 3:  # one outlier
                w.view(-1)[random.randrange(w.numel())] = random.choice([-1, 1]) * random.uniform(10, 50) * size
            tensors.append(w)
    return tensors


def _describe(w):
    return f"a {tuple(w.shape)} tensor in [{w.min().item():.4g}, {w.max().item():.4g}]"


def _codes(q, w, what, lo, hi):
    if not isinstance(q, torch.Tensor):
        fail(f"{what}: the quantized values should be a torch tensor, got {type(q).__name__}.")
    if q.dtype != torch.int8:
        fail(f"{what}: the quantized values should have dtype torch.int8, got {q.dtype}. "
             "(Convert with .to(torch.int8) after rounding and clamping.)")
    if q.shape != w.shape:
        fail(f"{what}: the quantized tensor should have the input's shape {tuple(w.shape)}, got {tuple(q.shape)}.")
    if q.min().item() < lo or q.max().item() > hi:
        fail(f"{what}: the codes should lie in [{lo}, {hi}], got [{q.min().item()}, {q.max().item()}].")


def _unpack(result, n, what):
    if not isinstance(result, (tuple, list)) or len(result) != n:
        shape = f"a {type(result).__name__}" + (f" of length {len(result)}" if isinstance(result, (tuple, list)) else "")
        fail(f"{what} should return a tuple of {n} values, got {shape}.")
    return result


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


def _untouched(w, original, what):
    if not torch.equal(w, original):
        fail(f"{what} changed its input tensor in place; work on a new tensor (w / scale, not w /= scale).")


# ---------------------------------------------------------------- absmax
def check_absmax_quantize(ns):
    fn = lookup(ns, "absmax_quantize")
    seed = fresh_seed()

    def run(w):
        what = f"absmax_quantize({_describe(w)})"
        original = w.clone()
        q, scale = _unpack(call(fn, w, what=what), 2, what)
        _untouched(w, original, what)
        _codes(q, w, what, -127, 127)
        scale = as_number(scale, f"{what}: the scale")
        if not (math.isfinite(scale) and scale > 0):
            fail(f"{what}: the scale should be a finite positive number, got {scale!r}.")
        return q, scale, what

    w = torch.tensor(LESSON)
    q, scale, what = run(w)
    if q.tolist() != LESSON_Q:
        fail(f"absmax_quantize({LESSON}): expected the codes {LESSON_Q}, got {q.tolist()}.")
    if not math.isclose(scale, 1.2 / 127, rel_tol=1e-5):
        fail(f"absmax_quantize({LESSON}): expected the scale 1.2/127 = {1.2 / 127:.6g}, got {scale:.6g}.")

    w = torch.tensor([0.5, -2.0, 1.0])
    q, scale, what = run(w)
    if not math.isclose(scale, 2.0 / 127, rel_tol=1e-5):
        hint = " That is max(w)/127: use the largest absolute value, max|w|." if math.isclose(scale, 1 / 127, rel_tol=1e-5) else ""
        fail(f"absmax_quantize([0.5, -2.0, 1.0]): the largest magnitude is |-2.0| = 2.0, so the scale should be "
             f"2/127 = {2 / 127:.6g}, got {scale:.6g}.{hint}")

    for w in [torch.tensor(OUTLIER)] + _random_tensors(seed):
        q, scale, what = run(w)
        expected = w.abs().max().item() / 127
        if not math.isclose(scale, expected, rel_tol=1e-5):
            fail(f"{what}: the scale should be max|w|/127 = {expected:.6g}, got {scale:.6g}. (seed {seed})")
        _within_half_step(q.double() * scale, w, scale, what, seed)

    with seeded(seed):
        shape = tuple(random.randint(1, 6) for _ in range(random.randint(1, 3)))
    zeros = torch.zeros(shape)
    q, scale, what = run(zeros)
    if q.ne(0).any():
        fail(f"{what}: an all-zero tensor should quantize to all-zero codes, got {q.reshape(-1)[:8].tolist()}...")
    if (q.double() * scale).ne(0).any():
        fail(f"{what}: an all-zero tensor should dequantize to exact zeros.")
    passed(f"absmax_quantize: the lesson's example, max|w| (not max w), an outlier, {len(_random_tensors(seed))} "
           f"random tensors and an all-zero one (seed {seed}).")


def check_absmax_dequantize(ns):
    fn = lookup(ns, "absmax_dequantize")
    seed = fresh_seed()
    cases = [torch.tensor(LESSON), torch.zeros(3)] + _random_tensors(seed)
    for w in cases:
        q, scale = absmax_quantize(w)
        expected = q.double() * scale
        for scale_as in (scale, torch.tensor(scale, dtype=torch.float32)):
            kind = "a Python float" if isinstance(scale_as, float) else "a 0-d tensor"
            what = f"absmax_dequantize(q, scale) for the codes of {_describe(w)}, scale as {kind}"
            q_in = q.clone()
            out = call(fn, q_in, scale_as, what=what)
            if not isinstance(out, torch.Tensor) or not out.is_floating_point():
                got = out.dtype if isinstance(out, torch.Tensor) else type(out).__name__
                fail(f"{what} should return a floating-point tensor, got {got}: don't convert back to int8.")
            if out.shape != q.shape:
                fail(f"{what}: expected the shape {tuple(q.shape)}, got {tuple(out.shape)}.")
            if not torch.equal(q_in, q):
                fail(f"{what} changed q in place.")
            err = (out.double() - expected).abs().max().item()
            if not err <= 1e-5 * max(expected.abs().max().item(), scale) + 1e-12:
                i = int((out.double() - expected).abs().reshape(-1).argmax())
                fail(f"{what}: q * scale should give {expected.reshape(-1)[i].item():.6g} for the code "
                     f"{int(q.reshape(-1)[i])} (scale {scale:.4g}), got {out.reshape(-1)[i].item():.6g}. (seed {seed})")
    passed(f"absmax_dequantize: {len(cases)} reference-quantized tensors, scale as float and as tensor (seed {seed}).")


# ---------------------------------------------------------------- zero-point
def check_zero_point_quantize(ns):
    fn = lookup(ns, "zero_point_quantize")
    seed = fresh_seed()

    def run(w):
        what = f"zero_point_quantize({_describe(w)})"
        original = w.clone()
        q, scale, zero_point = _unpack(call(fn, w, what=what), 3, what)
        _untouched(w, original, what)
        _codes(q, w, what, -128, 127)
        scale = as_number(scale, f"{what}: the scale")
        zero_point = as_number(zero_point, f"{what}: the zero point")
        if not (math.isfinite(scale) and scale > 0):
            fail(f"{what}: the scale should be a finite positive number, got {scale!r}.")
        if not math.isfinite(zero_point):
            fail(f"{what}: the zero point should be a finite number, got {zero_point!r}.")
        deq = (q.double() - zero_point) * scale
        return q, scale, zero_point, deq, what

    cases = [torch.tensor(LESSON), torch.tensor([0.1, 0.3, 0.5, 0.8, 0.2, 0.6, 0.9, 0.15]),
             torch.tensor(OUTLIER)] + _random_tensors(seed)
    for w in cases:
        q, scale, zero_point, deq, what = run(w)
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

    with seeded(seed):
        shape = tuple(random.randint(1, 6) for _ in range(random.randint(1, 3)))
        value = random.choice([-1, 1]) * 10 ** random.uniform(-3, 2)
    for w in [torch.zeros(shape), torch.full(shape, value), torch.tensor([value])]:
        q, scale, zero_point, deq, what = run(w)
        if not torch.isfinite(deq).all() or not torch.allclose(deq, w.double(), rtol=1e-6, atol=1e-12):
            fail(f"{what}: every weight is {w.reshape(-1)[0].item():.6g}; the notebook's rule (max == min: let "
                 f"the value set the scale, or 1.0 when it is 0) brings it back exactly, but (q - zero_point) * "
                 f"scale gives {deq.reshape(-1)[0].item():.6g} (scale {scale:.4g}, zero point {zero_point:g}). "
                 f"(seed {seed})")
    passed(f"zero_point_quantize: {len(cases)} tensors incl. the lesson's and {len(_random_tensors(seed))} random "
           f"ones use the full range within half a step; constant and all-zero tensors come back exactly "
           f"(seed {seed}).")


def check_zero_point_dequantize(ns):
    fn = lookup(ns, "zero_point_dequantize")
    seed = fresh_seed()
    cases = [torch.tensor(LESSON), torch.tensor([0.1, 0.3, 0.5, 0.8]), torch.full((3,), 2.5)] + _random_tensors(seed)
    for w in cases:
        q, scale, zero_point = zero_point_quantize(w)
        expected = (q.double() - zero_point) * scale
        forms = [(scale, zero_point, "Python numbers"),
                 (torch.tensor(scale, dtype=torch.float32), torch.tensor(zero_point), "0-d tensors")]
        for scale_as, zero_point_as, kind in forms:
            what = (f"zero_point_dequantize(q, scale, zero_point) for the codes of {_describe(w)} "
                    f"(scale {scale:.4g}, zero point {zero_point}, as {kind})")
            q_in = q.clone()
            out = call(fn, q_in, scale_as, zero_point_as, what=what)
            if not isinstance(out, torch.Tensor) or not out.is_floating_point():
                got = out.dtype if isinstance(out, torch.Tensor) else type(out).__name__
                fail(f"{what} should return a floating-point tensor, got {got}.")
            if out.shape != q.shape:
                fail(f"{what}: expected the shape {tuple(q.shape)}, got {tuple(out.shape)}.")
            if not torch.equal(q_in, q):
                fail(f"{what} changed q in place.")
            err = (out.double() - expected).abs()
            if not err.max().item() <= 1e-5 * max(expected.abs().max().item(), scale) + 1e-12:
                i = int(err.reshape(-1).argmax())
                fail(f"{what}: (q - zero_point) * scale should give {expected.reshape(-1)[i].item():.6g} for the "
                     f"code {int(q.reshape(-1)[i])}, got {out.reshape(-1)[i].item():.6g}. (Convert q to float "
                     f"before subtracting: int8 arithmetic overflows.) (seed {seed})")
    passed(f"zero_point_dequantize: {len(cases)} reference-quantized tensors, scale and zero point as numbers and "
           f"as tensors (seed {seed}).")


# ---------------------------------------------------------------- GPT-2's query block
def _small_gpt2(seed, i):
    from transformers import GPT2Config, GPT2LMHeadModel
    with seeded(seed + i):
        n_head = random.choice([2, 3, 4])
        n_embd = n_head * random.choice([4, 8, 12, 16])
        config = GPT2Config(n_embd=n_embd, n_layer=random.randint(2, 3), n_head=n_head, vocab_size=100,
                            n_positions=32, bos_token_id=0, eos_token_id=0)
        model = GPT2LMHeadModel(config)
    return model.eval()


def check_query_block(ns):
    fn = lookup(ns, "query_block")
    seed = fresh_seed()
    for i in range(3):
        model = _small_gpt2(seed, i)
        n = model.config.n_embd
        what = f"query_block(model) on a small GPT-2 with n_embd={n} ({model.config.n_layer} blocks)"
        block = call(fn, model, what=what)
        if not isinstance(block, torch.Tensor):
            fail(f"{what} should return a tensor, got {type(block).__name__}.")
        if tuple(block.shape) != (n, n):
            hint = ""
            if tuple(block.shape) in [(n, 3 * n), (3 * n, n)]:
                hint = (" That is all of c_attn (query, key and value): keep only the first n_embd output columns, "
                        "with n_embd read from model.config (a hard-coded 768 fits GPT-2 small only).")
            fail(f"{what}: expected a ({n}, {n}) tensor, got {tuple(block.shape)}.{hint} (seed {seed})")
        weight = model.transformer.h[0].attn.c_attn.weight.detach()
        wanted = weight[:, :n]
        got = block.detach()
        if torch.equal(got, wanted) or torch.equal(got, wanted.T):
            continue
        for name, part in [("key", weight[:, n:2 * n]), ("value", weight[:, 2 * n:])]:
            if torch.equal(got, part) or torch.equal(got, part.T):
                fail(f"{what}: that is the {name} block. c_attn's output columns hold query, key, value in that "
                     f"order. (seed {seed})")
        for j, other in enumerate(model.transformer.h[1:], start=1):
            part = other.attn.c_attn.weight.detach()[:, :n]
            if torch.equal(got, part) or torch.equal(got, part.T):
                fail(f"{what}: that is block {j}'s query block; the exercise asks for block 0. (seed {seed})")
        fail(f"{what}: the values are not block 0's query weights (the first n_embd output columns of "
             f"transformer.h[0].attn.c_attn.weight). (seed {seed})")
    passed(f"query_block: three small random GPT-2 configurations (seed {seed}).")


# ---------------------------------------------------------------- absmax per block
BLOCK_LESSON = [-0.8, 0.3, 1.2, -0.5, 0.1, -0.06, 0.02, 0.04]
BLOCK_LESSON_Q = [-85, 32, 127, -53, 127, -76, 25, 51]


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


def _block_cases(seed):
    """(tensor, block_size or None for the default) pairs: odd sizes, short last blocks, zero blocks, outliers."""
    cases = []
    with seeded(seed):
        for i in range(8):
            shape = tuple(random.randint(1, 30) for _ in range(random.randint(1, 3)))
            size = 10 ** random.uniform(-3, 1)
            w = torch.randn(shape) * size
            block_size = random.choice([1, 3, 7, 16, 33, 64, 100])
            flat = w.view(-1)
            if i % 3 == 1 and flat.numel() > block_size:  # one block of zeros
                start = block_size * random.randrange(flat.numel() // block_size)
                flat[start:start + block_size] = 0
            if i % 3 == 2:  # an outlier
                flat[random.randrange(flat.numel())] = random.choice([-1, 1]) * random.uniform(10, 50) * size
            cases.append((w, block_size))
        cases.append((torch.randn(random.randint(65, 300)) * 0.02, None))  # the default block size, 64
    return cases


def _as_scales(scales, n_blocks, what):
    if isinstance(scales, (list, tuple)):
        scales = torch.tensor([as_number(s, f"{what}: a scale") for s in scales], dtype=torch.float64)
    if not isinstance(scales, torch.Tensor):
        fail(f"{what}: the scales should be a tensor (one per block), got {type(scales).__name__}.")
    if scales.numel() != n_blocks:
        fail(f"{what}: expected {n_blocks} scales, one per block of consecutive values (the last block may be "
             f"shorter), got {scales.numel()} (shape {tuple(scales.shape)}).")
    return scales.detach().reshape(-1).double()


def check_absmax_quantize_blocks(ns):
    fn = lookup(ns, "absmax_quantize_blocks")
    seed = fresh_seed()

    def run(w, block_size):
        bs = 64 if block_size is None else block_size
        what = f"absmax_quantize_blocks({_describe(w)}" + (")" if block_size is None else f", block_size={bs})")
        original = w.clone()
        args = () if block_size is None else (block_size,)
        q, scales = _unpack(call(fn, w, *args, what=what), 2, what)
        _untouched(w, original, what)
        _codes(q, w, what, -127, 127)
        n_blocks = -(-w.numel() // bs)
        scales = _as_scales(scales, n_blocks, what)
        if not (torch.isfinite(scales).all() and (scales > 0).all()):
            fail(f"{what}: every scale should be finite and positive (an all-zero block gets 1.0), got "
                 f"{scales[~(torch.isfinite(scales) & (scales > 0))][:3].tolist()}.")
        return q, scales, what, bs

    w = torch.tensor(BLOCK_LESSON)
    q, scales, what, _ = run(w, 4)
    if q.tolist() != BLOCK_LESSON_Q or not torch.allclose(scales, torch.tensor([1.2 / 127, 0.1 / 127],
                                                                               dtype=torch.float64), rtol=1e-5):
        fail(f"absmax_quantize_blocks({BLOCK_LESSON}, block_size=4): expected the codes {BLOCK_LESSON_Q} and the "
             f"scales [1.2/127, 0.1/127] = [{1.2 / 127:.6g}, {0.1 / 127:.6g}], got {q.tolist()} and "
             f"{[round(s, 6) for s in scales.tolist()]}.")

    for w, block_size in [(torch.cat([torch.zeros(3), torch.tensor([0.5, -1.0, 0.25])]), 3),
                          (torch.linspace(-1, 1, 130), 64)] + _block_cases(seed):
        q, scales, what, bs = run(w, block_size)
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
    passed(f"absmax_quantize_blocks: the lesson's two blocks, a zero block, a short last block and "
           f"{len(_block_cases(seed))} random tensors with odd sizes, zero blocks and outliers (seed {seed}).")


def check_absmax_dequantize_blocks(ns):
    fn = lookup(ns, "absmax_dequantize_blocks")
    seed = fresh_seed()
    cases = [(torch.tensor(BLOCK_LESSON), 4), (torch.linspace(-1, 1, 130), 64)] + _block_cases(seed)
    for w, block_size in cases:
        bs = 64 if block_size is None else block_size
        q, scales = absmax_quantize_blocks(w, bs)
        expected = absmax_dequantize_blocks(q, scales, bs).double()
        what = ("absmax_dequantize_blocks(q, scales" + (")" if block_size is None else f", block_size={bs})") +
                f" for the codes of {_describe(w)} ({scales.numel()} blocks)")
        q_in, scales_in = q.clone(), scales.clone()
        args = () if block_size is None else (block_size,)
        out = call(fn, q_in, scales_in, *args, what=what)
        if not isinstance(out, torch.Tensor) or not out.is_floating_point():
            got = out.dtype if isinstance(out, torch.Tensor) else type(out).__name__
            fail(f"{what} should return a floating-point tensor, got {got}.")
        if out.shape != q.shape:
            fail(f"{what}: expected q's shape {tuple(q.shape)}, got {tuple(out.shape)}.")
        if not torch.equal(q_in, q) or not torch.equal(scales_in, scales):
            fail(f"{what} changed its inputs in place.")
        err = (out.double() - expected).abs()
        if not err.max().item() <= 1e-5 * expected.abs().max().item() + 1e-12:
            i = int(err.reshape(-1).argmax())
            fail(f"{what}: value {i} of the flattened tensor is in block {i // bs}, so it should be its code "
                 f"{int(q.reshape(-1)[i])} times scale {scales[i // bs].item():.4g} = {expected.reshape(-1)[i].item():.6g},"
                 f" got {out.reshape(-1)[i].item():.6g}. (seed {seed})")
    passed(f"absmax_dequantize_blocks: {len(cases)} reference-quantized tensors, short last blocks included "
           f"(seed {seed}).")
