"""Exercise 3's judges (LoRA from scratch): `LoRALinear`, `add_lora_to_gpt2` (and the notebook's GPT-2 counts),
`merge_lora`.

Every check draws fresh layer sizes, ranks and values from the grading's seed (named in the messages), so a
hard-coded answer cannot pass, and computes what is expected with the references below on the very inputs it
hands the notebook. Each answer is graded on its own: `add_lora_to_gpt2` runs with a probe in place of the
notebook's `LoRALinear` (graders/ex3_lora_from_scratch.py `lora_probe`), and `merge_lora` on a plain container
of `base`, `A`, `B` and `scale`, so a wrong `LoRALinear` costs only its own points."""
import math
import random
import re

import torch

from graders import _wire
from judges._core import (LocalReference, Malformed, call, defined, describe, fail, flag, integer, items,
                          named_sizes, part, text, value)

KINDS = ("Linear", "Linear (no bias)", "Conv1D")
TYPE_NAMES = {"Linear": "torch.nn.modules.linear.Linear", "Linear (no bias)": "torch.nn.modules.linear.Linear",
              "Conv1D": "transformers.pytorch_utils.Conv1D"}
GPT2_SMALL_PARAMS = 124_439_808  # GPT-2 small (and the offline stand-in), tied embeddings counted once
NOTEBOOK_R = 8  # the notebook wraps its GPT-2 with r=8, alpha=16
X_SHAPE = (3, 2)  # leading dimensions of LoRALinear's inputs
MERGE_X_SHAPE = (4, 3)
IDS_SHAPE = (2, 12)


# ------------------------------------------------------------------------------------ reference answers
# They never leave the grading worker. A layer is (kind, weight, bias): nn.Linear stores its weight (d_out, d_in)
# and computes x W^T + b; Conv1D stores it (d_in, d_out) and computes x W + b.
def base_forward(kind, weight, bias, x):
    out = x @ (weight if kind == "Conv1D" else weight.T)
    return out if bias is None else out + bias


def lora_forward(kind, weight, bias, A, B, scale, x):
    """LoRALinear's forward: the frozen base plus the low-rank detour, base(x) + (x A^T B^T) * alpha / r."""
    return base_forward(kind, weight, bias, x) + (x @ A.T @ B.T) * scale


def lora_delta_as_stored(kind, A, B, scale):
    """scale * B @ A in the layout the base layer stores its weight in."""
    delta = scale * (B @ A)  # (d_out, d_in), like nn.Linear.weight
    return delta.T if kind == "Conv1D" else delta


def merged_weight(kind, weight, A, B, scale):
    """merge_lora's weight: W + (alpha / r) B A, transposed for Conv1D."""
    return weight + lora_delta_as_stored(kind, A, B, scale)


def lora_trainable(r, d_in, d_out):
    return r * (d_in + d_out)


def reference_gpt2_logits(config, seed, ids, probe_seed, r, alpha, gates):
    """The logits of the small GPT-2 (config, seed) on ids: plain, and with every block's c_attn wrapped in the
    probe (what a right add_lora_to_gpt2 makes of it) and block i's gate set to gates[i]."""
    from graders.ex3_lora_from_scratch import lora_probe, small_gpt2
    model = small_gpt2(config, seed)
    ids = torch.tensor(ids, dtype=torch.long)
    probe = lora_probe(probe_seed)
    with torch.no_grad():
        before = model(ids).logits
        for block, gate in zip(model.transformer.h, gates):
            block.attn.c_attn = probe(block.attn.c_attn, r=r, alpha=alpha)
            block.attn.c_attn.gate.fill_(float(gate))
        after = model(ids).logits
    return {"before": _wire.encode(before), "after": _wire.encode(after)}


# ------------------------------------------------------------------------------------ drawing inputs
def _non_square_sizes(rng):
    d_in = rng.randint(5, 20)
    d_out = rng.choice([n for n in range(5, 24) if n != d_in])
    return d_in, d_out


def _r_alpha(rng):
    r = rng.randint(1, 6)
    alpha = rng.choice([a for a in (1, 2, 4, 8, 16, 32) if a != r])  # alpha != r: a missing scale shows
    return r, alpha


def _layer_values(kind, d_in, d_out, generator):
    """A layer's weight and bias like those torch and transformers start with (Conv1D: a bias of size ~1)."""
    if kind == "Conv1D":
        weight = torch.randn(d_in, d_out, generator=generator) * 0.02
        bias = torch.randn(d_out, generator=generator)
    else:
        bound = 1 / math.sqrt(d_in)
        weight = (torch.rand(d_out, d_in, generator=generator) * 2 - 1) * bound
        bias = (torch.rand(d_out, generator=generator) * 2 - 1) * bound if kind == "Linear" else None
    return weight, bias


def _layer_cases(seed, x_shape):
    rng, generator = random.Random(seed), torch.Generator().manual_seed(seed)
    cases = []
    for kind in KINDS:
        d_in, d_out = _non_square_sizes(rng)
        r, alpha = _r_alpha(rng)
        weight, bias = _layer_values(kind, d_in, d_out, generator)
        cases.append({"kind": kind, "d_in": d_in, "d_out": d_out, "r": r, "alpha": alpha, "weight": weight,
                      "bias": bias, "x": torch.randn(*x_shape, d_in, generator=generator),
                      "A": torch.randn(r, d_in, generator=generator), "B": torch.randn(d_out, r, generator=generator)})
    return cases


def _encoded(case, keys):
    return {key: _wire.encode(case[key]) for key in keys}


# ------------------------------------------------------------------------------------ reading the data
def _cases(data, answer, count):
    defined(part(data, "answer"), answer)
    got = items(data, "cases", count)
    for case in got:
        if type(case) is not dict:
            raise Malformed("a case that is not a record")
    return got


def _short(type_name: str) -> str:
    return type_name.rsplit(".", 1)[-1]


def _shape(got):
    """How a message names what came back where a tensor was expected: its shape, or its type."""
    if isinstance(got, torch.Tensor):
        return tuple(got.shape)
    if isinstance(got, _wire.MetaTensor):
        return f"a tensor of shape {got.shape} whose values did not come back"
    if isinstance(got, _wire.Opaque):
        return _short(got.type_name)
    return type(got).__name__


def _is_tensor(got, shape=None) -> bool:
    return isinstance(got, torch.Tensor) and (shape is None or tuple(got.shape) == tuple(shape))


def _max_diff(a, b) -> float:
    return (a.double() - b.double()).abs().max().item()


def _far(a, b, tol) -> bool:
    """a and b (tensors of one shape) differ by more than tol somewhere, or hold a NaN."""
    diff = _max_diff(a, b)
    return not diff <= tol


def _biggest(t) -> float:
    return t.double().abs().max().item() if t.numel() else 0.0


def _number(got):
    """A number the notebook holds (int, float, a one-element tensor, a numeric string), or None."""
    if isinstance(got, torch.Tensor):
        return float(got.reshape(()).double()) if got.numel() == 1 else None
    if isinstance(got, (bool, int, float)):
        return float(got)
    if isinstance(got, str):
        try:
            return float(got)
        except ValueError:
            return None
    return None


# ------------------------------------------------------------------------------------ LoRALinear
def ask_LoRALinear(ctx):
    cases = _layer_cases(ctx.seed, X_SHAPE)
    request = {"cases": [{**_encoded(c, ("weight", "bias", "x", "A", "B")), "kind": c["kind"], "r": c["r"],
                          "alpha": c["alpha"]} for c in cases]}
    return request, {"cases": cases, "seed": ctx.seed}


def judge_LoRALinear(data, secret):
    seed = secret["seed"]
    for case, got in zip(secret["cases"], _cases(data, "LoRALinear", len(secret["cases"]))):
        what = (f"LoRALinear({case['kind']}, {case['d_in']} in -> {case['d_out']} out, r={case['r']}, "
                f"alpha={case['alpha']}) [seed {seed}]")
        _judge_layer(got, case, what)
    return (f"LoRALinear: frozen base, A (r x d_in) and B (d_out x r), B zero at start, scale = alpha/r, "
            f"forward and gradients right on nn.Linear (with and without bias) and Conv1D [seed {seed}].")


def _trainable_tensor(got, name, what):
    report = part(got, name)
    if not flag(report, "is_parameter"):
        fail(f"{what}: `self.{name}` should be an nn.Parameter, got {_short(text(report, 'type'))}.")
    if not flag(report, "requires_grad"):
        fail(f"{what}: `self.{name}` must be trainable (requires_grad=True).")
    return value(report, "value")


def _judge_layer(got, case, what):
    kind, d_in, d_out, r, alpha = case["kind"], case["d_in"], case["d_out"], case["r"], case["alpha"]
    call(part(got, "made"), what)
    if not flag(got, "is_module"):
        fail(f"{what}: expected an nn.Module, got {_short(text(got, 'type'))}.")
    if not flag(got, "base_is_given"):
        fail(f"{what}: `self.base` should be the layer you were given (the very same object).")
    not_frozen = items(got, "base_trainable")
    if not_frozen:
        names = [str(n)[:40] for n in not_frozen[:2]]
        fail(f"{what}: the base layer's {' and '.join(names)} still require gradients (requires_grad=True). "
             "Freeze the base weight and bias: only A and B may train.")
    A, B = _trainable_tensor(got, "A", what), _trainable_tensor(got, "B", what)
    if not _is_tensor(A, (r, d_in)):
        fail(f"{what}: A should have shape (r, d_in) = {(r, d_in)}, got {_shape(A)}.")
    if not _is_tensor(B, (d_out, r)):
        fail(f"{what}: B should have shape (d_out, r) = {(d_out, r)}, got {_shape(B)}.")
    if not _biggest(B) == 0.0:
        fail(f"{what}: B should start at exactly zero (so the wrapped layer starts identical to the base), "
             f"but its largest entry is {_biggest(B):.3g}.")
    if not bool(torch.isfinite(A).all()) or _biggest(A) == 0.0:
        fail(f"{what}: A should start with small random values (not all zero): with A = 0 and B = 0 "
             "neither ever gets a gradient.")
    scale = value(got, "scale")
    scale_value = _number(scale)
    if scale_value is None:
        shown = repr(scale) if scale is None or isinstance(scale, _wire.Opaque) else describe(scale)
        fail(f"{what}: `self.scale` should be the number alpha / r = {alpha / r:g}, got {shown}.")
    if not abs(scale_value - alpha / r) <= 1e-6 * max(1.0, alpha / r):
        fail(f"{what}: `self.scale` should be alpha / r = {alpha}/{r} = {alpha / r:g}, got {scale_value:g}.")
    count, expected_count = part(got, "trainable"), lora_trainable(r, d_in, d_out)
    if count is None:
        fail(f"{what}: its parameters could not be listed (named_parameters() raised).")
    if type(count) is not int:
        raise Malformed("'trainable' is not an integer")
    if count != expected_count:
        fail(f"{what}: expected r * (d_in + d_out) = {expected_count} trainable parameters (A and B only), "
             f"found {count}.")

    # At the start the layer is the base layer.
    x, weight, bias = case["x"], case["weight"], case["bias"]
    base_out = base_forward(kind, weight, bias, x)
    out0 = call(part(got, "at_start"), f"{what} forward")
    if not _is_tensor(out0, (*X_SHAPE, d_out)):
        fail(f"{what}: forward on an input of shape ({', '.join(map(str, X_SHAPE))}, {d_in}) should return shape "
             f"({', '.join(map(str, X_SHAPE))}, {d_out}), got {_shape(out0)}.")
    if _far(out0, base_out, 1e-5 * max(1.0, _biggest(base_out))):
        fail(f"{what}: with B = 0 the output should equal base(x); max difference {_max_diff(out0, base_out):.3g}.")

    # As if trained: A and B set to the request's values; the forward must be base(x) + x A^T B^T * alpha / r.
    if not flag(got, "set"):
        fail(f"{what}: A and B could not be set to new values (as if trained) with A.copy_(...) and B.copy_(...).")
    A1, B1 = case["A"], case["B"]
    expected = lora_forward(kind, weight, bias, A1, B1, alpha / r, x)
    out = call(part(got, "trained"), f"{what} forward")
    if not _is_tensor(out, expected.shape):
        fail(f"{what}: forward on an input of shape ({', '.join(map(str, X_SHAPE))}, {d_in}) should return shape "
             f"{tuple(expected.shape)}, got {_shape(out)}.")
    if _far(out, expected, 1e-4 * max(1.0, _biggest(expected))):
        plain = lora_forward(kind, weight, bias, A1, B1, 1.0, x)
        hint = (" It matches base(x) + x A^T B^T without the scale: multiply the LoRA path by self.scale."
                if not _far(out, plain, 1e-4 * max(1.0, _biggest(plain))) else "")
        fail(f"{what}: with B set to random values the output should be base(x) + (x @ A.T @ B.T) * alpha / r; "
             f"max difference {_max_diff(out, expected):.3g}.{hint}")

    # Gradients reach A and B, and nothing else.
    call(part(got, "backward"), f"{what}: a backward pass through the output")
    grads = part(got, "grads")
    for name in ("A", "B"):
        grad = value(grads, name)
        if not isinstance(grad, torch.Tensor) or not _biggest(grad) != 0.0:
            fail(f"{what}: after a backward pass {name} got no gradient: is it used in forward?")
    leaked = items(got, "base_grads")
    if leaked:
        fail(f"{what}: the base layer's {', '.join(str(n)[:40] for n in leaked[:2])} received gradients; only A "
             "and B should.")


# ------------------------------------------------------------------------------------ add_lora_to_gpt2
def _reference(ctx):
    return ctx.reference or LocalReference()


def ask_add_lora_to_gpt2(ctx):
    rng = random.Random(ctx.seed)
    probe_seed = rng.randrange(2**31)
    models = []
    for _ in range(2):
        config = {"n_embd": rng.choice([32, 40, 48, 56, 64]), "n_layer": rng.randint(2, 3), "n_head": 4,
                  "vocab_size": 100, "n_positions": 32}
        r, alpha = _r_alpha(rng)
        spec = {"config": config, "seed": rng.randrange(2**31), "r": r, "alpha": alpha,
                "ids": [[rng.randrange(config["vocab_size"]) for _ in range(IDS_SHAPE[1])]
                        for _ in range(IDS_SHAPE[0])],
                "gates": [rng.choice([-1, 1]) * rng.uniform(0.5, 1.5) for _ in range(config["n_layer"])]}
        models.append(spec)
    expected = [_reference(ctx)("ex3_lora_from_scratch", "gpt2_logits", probe_seed=probe_seed,
                                **{key: spec[key] for key in ("config", "seed", "ids", "r", "alpha", "gates")})
                for spec in models]
    logits = [{key: _wire.decode(result[key]) for key in ("before", "after")} for result in expected]
    return {"probe_seed": probe_seed, "models": models}, {"models": models, "logits": logits, "seed": ctx.seed}


def judge_add_lora_to_gpt2(data, secret):
    seed = secret["seed"]
    defined(part(data, "answer"), "add_lora_to_gpt2")
    got_models = items(data, "models", len(secret["models"]))
    for spec, logits, got in zip(secret["models"], secret["logits"], got_models):
        config = spec["config"]
        what = (f"add_lora_to_gpt2(small GPT-2 with n_embd={config['n_embd']}, n_layer={config['n_layer']}, "
                f"r={spec['r']}, alpha={spec['alpha']}) [seed {seed}]")
        _judge_gpt2(got, spec, logits, what)
    return (f"add_lora_to_gpt2: every c_attn wrapped in LoRALinear(c_attn, r, alpha) (and nothing else), the rest "
            f"frozen, LoRA used in the forward pass [seed {seed}].")


GATE = re.compile(r"(^|\.)attn\.c_attn\.gate$")  # the probe's own parameter: what LoRA's A and B are here


def _judge_gpt2(got, spec, logits, what):
    if type(got) is not dict:
        raise Malformed("a model's record that is not a record")
    r, alpha, n_layer = spec["r"], spec["alpha"], spec["config"]["n_layer"]
    call(part(got, "made"), what)
    if flag(got, "returned_none"):
        fail(f"{what}: returned None; return the model (after wrapping its layers).")
    if not flag(got, "is_module") or not flag(got, "has_transformer"):
        fail(f"{what}: should return the GPT-2 model, got {_short(text(got, 'type'))}.")
    blocks = items(got, "blocks")
    if len(blocks) != n_layer:
        fail(f"{what}: the model should keep its {n_layer} transformer blocks, found {len(blocks)}.")
    for i, block in enumerate(blocks):
        c_attn = part(block, "attn.c_attn")
        if not flag(c_attn, "probe"):
            kind = _short(text(c_attn, "type"))
            if text(c_attn, "type").startswith("peft."):
                kind = f"{kind} from peft (the library's LoRA)"
            if flag(c_attn, "lora_like"):
                fail(f"{what}: block {i}'s attn.c_attn is a {kind}, not a LoRALinear; replace it with "
                     "LoRALinear(c_attn, r, alpha) (the notebook's class: the check swaps in its own, so that task 1 "
                     "costs nothing here), so that GPT-2's forward pass goes through LoRA.")
            fail(f"{what}: block {i}'s attn.c_attn is a plain {kind}; replace it with "
                 "LoRALinear(c_attn, r, alpha), so that GPT-2's forward pass goes through LoRA.")
        if flag(c_attn, "wraps_probe"):
            fail(f"{what}: block {i}'s attn.c_attn is a LoRALinear around another LoRALinear; wrap the original "
                 "c_attn once.")
        position = part(c_attn, "wraps_block")
        if position is not None and position != i:
            fail(f"{what}: block {i}'s LoRALinear wraps block {position}'s attn.c_attn; wrap each block's own "
                 "c_attn (block.attn.c_attn = LoRALinear(block.attn.c_attn, r, alpha)).")
        got_r, got_alpha = value(c_attn, "r"), value(c_attn, "alpha")
        if _number(got_r) != r or _number(got_alpha) != alpha or isinstance(got_r, str) or isinstance(got_alpha, str):
            fail(f"{what}: block {i}'s LoRALinear was made with r={got_r!r}, alpha={got_alpha!r}; pass "
                 f"add_lora_to_gpt2's own r={r} and alpha={alpha} on: LoRALinear(c_attn, r=r, alpha=alpha).")
        for name in ("attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
            other = part(block, name)
            if flag(other, "probe") or flag(other, "lora_like"):
                fail(f"{what}: block {i}'s {name} was wrapped too; only attn.c_attn should get LoRA.")
    trainable = named_sizes(got, "trainable")
    still_trainable = [name for name, _ in trainable if not GATE.search(name)]
    if still_trainable:
        fail(f"{what}: {len(still_trainable)} of GPT-2's own parameters are still trainable "
             f"(e.g. {still_trainable[0][:80]}). Freeze every parameter of the model; only LoRA's A and B train.")
    frozen = [i for i, block in enumerate(blocks) if not flag(part(block, "attn.c_attn"), "trains")]
    if frozen:
        fail(f"{what}: the LoRA parameters of block {frozen[0]} do not train (requires_grad=False), so nothing "
             f"would learn: expected n_layer * r * (n_embd + 3 * n_embd) = "
             f"{n_layer * lora_trainable(r, spec['config']['n_embd'], 3 * spec['config']['n_embd'])} trainable "
             "parameters with LoRA. Freeze GPT-2's parameters first, then wrap: LoRALinear's A and B are new and "
             "train.")

    before, after = logits["before"], logits["after"]
    logits_init = call(part(got, "at_start"), f"{what}: the returned model's forward pass")
    if not _is_tensor(logits_init, before.shape):
        fail(f"{what}: the returned model's logits should have shape {tuple(before.shape)}, got "
             f"{_shape(logits_init)}.")
    if _far(logits_init, before, 1e-5 * max(1.0, _biggest(before))):
        fail(f"{what}: right after adding LoRA (B = 0) the logits should be unchanged; "
             f"max difference {_max_diff(logits_init, before):.3g}.")

    call(part(got, "backward"), f"{what}: a backward pass through the returned model")
    grads = items(got, "gate_grads", n_layer)
    for i, grad in enumerate(grads):
        grad = value(grad) if grad is not None else None
        if not isinstance(grad, torch.Tensor) or grad.numel() != 1 or not _biggest(grad) != 0.0:
            fail(f"{what}: after a backward pass block {i}'s LoRA layer got no gradient: the LoRA parameters "
                 "must sit in GPT-2's forward pass (attached but unused parameters never learn).")
    logits_after = call(part(got, "gates_set"), f"{what}: the returned model's forward pass")
    if not _is_tensor(logits_after, after.shape):
        fail(f"{what}: the returned model's logits should have shape {tuple(after.shape)}, got "
             f"{_shape(logits_after)}.")
    if not _far(logits_after, before, 1e-4):
        fail(f"{what}: with every LoRA layer's update switched on (as if trained) the logits did not change: "
             "LoRA is not in the forward.")
    if _far(logits_after, after, 1e-4 * max(1.0, _biggest(after))):
        fail(f"{what}: with every LoRA layer's update switched on (as if trained) the logits differ from GPT-2 with "
             f"LoRALinear(c_attn, r, alpha) in every block by up to {_max_diff(logits_after, after):.3g}; wrap each "
             "block's attn.c_attn and change nothing else in the model.")


# ------------------------------------------------------------------------------------ the notebook's counts
def ask_add_lora_to_gpt2_counts(ctx):
    return {}, {}


def judge_add_lora_to_gpt2_counts(data, secret):
    """The GPT-2 count the notebook printed, recomputed from the notebook's own model object."""
    found = part(data, "model")
    defined(found, "gpt2_lora", callable_=False)
    report = part(found, "report")
    if not flag(report, "is_module") or not flag(report, "has_transformer"):
        fail(f"`gpt2_lora` should be the GPT-2 model with LoRA added, got {_short(text(found, 'type'))}.")
    config = part(report, "config")
    n_layer, n_embd = value(config, "n_layer"), value(config, "n_embd")
    if type(n_layer) is not int or type(n_embd) is not int:
        fail(f"`gpt2_lora.config` should give n_layer and n_embd as integers, got {n_layer!r} and {n_embd!r}.")
    blocks = items(report, "c_attn")
    if len(blocks) != n_layer:
        fail(f"`gpt2_lora` has {len(blocks)} transformer blocks, but its config says n_layer = {n_layer}.")
    for i, c_attn in enumerate(blocks):
        if not flag(c_attn, "has_A") or not flag(c_attn, "has_base"):
            fail(f"`gpt2_lora`: block {i}'s attn.c_attn is a plain {_short(text(c_attn, 'type'))}, not a LoRA layer.")
    trainable = named_sizes(report, "trainable")
    outside = [name for name, _ in trainable if ".attn.c_attn." not in name]
    if outside:
        fail(f"`gpt2_lora`: parameters outside attn.c_attn are trainable: {[n[:80] for n in outside[:3]]} "
             f"({len(outside)} in all).")
    recomputed = sum(size for _, size in trainable)
    total = integer(report, "total")
    expected = n_layer * lora_trainable(NOTEBOOK_R, n_embd, 3 * n_embd)
    if recomputed != expected:
        fail(f"`gpt2_lora` has {recomputed:,} trainable parameters; r=8 on c_attn in {n_layer} blocks "
             f"gives {expected:,}.")
    reported = _notebook_number(data, "gpt2_trainable")
    if reported != recomputed:
        fail(f"`gpt2_trainable` is {reported:,}, but counting gpt2_lora's trainable parameters gives "
             f"{recomputed:,}.")
    reported_total = _notebook_number(data, "gpt2_total")
    if reported_total != total:
        fail(f"`gpt2_total` is {reported_total:,}, but gpt2_lora has {total:,} parameters.")
    if n_embd == 768 and n_layer == 12 and total != GPT2_SMALL_PARAMS + expected:
        fail(f"`gpt2_lora` should hold GPT-2's {GPT2_SMALL_PARAMS:,} parameters plus {expected:,} LoRA ones, "
             f"found {total:,}.")
    return f"gpt2_lora: {recomputed:,} trainable of {total:,}, all of them LoRA A and B inside attn.c_attn."


def _notebook_number(data, name):
    """The notebook's `name` as an integer (int(...) of a number or a one-element tensor), or a failure."""
    found = part(data, name)
    defined(found, name, callable_=False)
    got = value(found, "value")
    number = None if isinstance(got, str) else _number(got)
    if number is None or not math.isfinite(number):
        shown = _short(got.type_name) if isinstance(got, _wire.Opaque) else describe(got)
        fail(f"`{name}` should be a number, got {shown}.")
    return int(number)


# ------------------------------------------------------------------------------------ merge_lora
def ask_merge_lora(ctx):
    cases = _layer_cases(ctx.seed, MERGE_X_SHAPE)
    for case in cases:
        case["scale"] = case["alpha"] / case["r"]
    request = {"cases": [{**_encoded(c, ("weight", "bias", "x", "A", "B")), "kind": c["kind"], "scale": c["scale"]}
                         for c in cases]}
    return request, {"cases": cases, "seed": ctx.seed}


def judge_merge_lora(data, secret):
    seed = secret["seed"]
    for case, got in zip(secret["cases"], _cases(data, "merge_lora", len(secret["cases"]))):
        what = (f"merge_lora(LoRA on {case['kind']}, {case['d_in']} in -> {case['d_out']} out, r={case['r']}, "
                f"alpha={case['alpha']}) [seed {seed}]")
        _judge_merge(got, case, what)
    return (f"merge_lora: plain layer of the base's type, weight = W + (alpha/r) B A in the layer's layout, "
            f"bias unchanged, same outputs, on nn.Linear and Conv1D [seed {seed}].")


def _judge_merge(got, case, what):
    kind, weight, bias, A, B, scale, x = (case[k] for k in ("kind", "weight", "bias", "A", "B", "scale", "x"))
    call(part(got, "made"), what)
    plain = "Conv1D" if kind == "Conv1D" else "Linear"
    if text(got, "type") != TYPE_NAMES[kind]:
        fail(f"{what}: should return a plain {plain} (the type of layer.base), got {_short(text(got, 'type'))}.")
    parameters = items(got, "parameters")
    lora_left = [n for n in parameters if type(n) is str and n.split(".")[-1] in ("A", "B")]
    if lora_left or flag(got, "has_A_or_B"):
        fail(f"{what}: the merged layer still carries LoRA parameters; fold them into the weight and drop them.")
    got_w = value(got, "weight")
    if not _is_tensor(got_w, weight.shape):
        fail(f"{what}: merged weight should keep the shape {tuple(weight.shape)}, got {_shape(got_w)}.")
    expected_w = merged_weight(kind, weight, A, B, scale)
    tol = 1e-5 * max(1.0, _biggest(expected_w))
    if _far(got_w, expected_w, tol):
        hint = ""
        if not _far(got_w, merged_weight(kind, weight, A, B, 1.0), tol):
            hint = " It matches W + B @ A without the scale alpha / r."
        fail(f"{what}: merged weight should be W + (alpha/r) * B @ A (transposed for Conv1D, which stores "
             f"(in, out)); max difference {_max_diff(got_w, expected_w):.3g}.{hint}")
    got_b = value(got, "bias")
    if bias is None:
        if got_b is not None:
            fail(f"{what}: the base layer has no bias, so the merged layer should have none either.")
    elif not _is_tensor(got_b, bias.shape) or _far(got_b, bias, 1e-6):
        fail(f"{what}: the bias should be the base layer's bias, unchanged.")
    expected_out = lora_forward(kind, weight, bias, A, B, scale, x)
    output = part(got, "output")
    if output is None:
        fail(f"{what}: the merged layer cannot be called on an input.")
    out = call(output, f"{what}: the merged layer's forward")
    if not _is_tensor(out, expected_out.shape) or _far(out, expected_out, 1e-4 * max(1.0, _biggest(expected_out))):
        gap = _max_diff(out, expected_out) if _is_tensor(out, expected_out.shape) else None
        fail(f"{what}: the merged layer's outputs differ from the LoRA layer's (computed before merging) "
             + (f"by up to {gap:.3g}." if gap is not None else f": expected shape {tuple(expected_out.shape)}, got "
                f"{_shape(out)}."))
    after = part(got, "after")
    given = {"base.weight": weight, "base.bias": bias, "A": A, "B": B}
    changed = []
    for name, original in given.items():
        now = value(after, name)
        if original is None:
            continue  # no bias: nothing for merge_lora to leave alone
        if not _is_tensor(now, original.shape) or not torch.equal(now.to(original.dtype), original):
            changed.append(f"layer.{name}")
    if changed:
        fail(f"{what}: merge_lora modified the LoRA layer it was given (changed by the call: {', '.join(changed)}). "
             "The merged layer it returned is right, but the LoRA layer is no longer the trained one (its forward "
             "now adds the update twice): merge into a copy of layer.base (copy.deepcopy) and leave `layer` as it was.")
