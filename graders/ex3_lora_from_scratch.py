"""Hidden checks for Exercise 3 (LoRA from scratch): `LoRALinear`, `add_lora_to_gpt2`, `merge_lora`.

Every check builds fresh layers or small GPT-2 models from a new seed (named in the messages), so a
hard-coded answer cannot pass. Each answer is graded on its own: `add_lora_to_gpt2` and `merge_lora`
run with the reference `LoRALinear` below swapped into the notebook, so a wrong `LoRALinear` costs
only its own points."""
import random
import re

import torch
import torch.nn as nn
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.pytorch_utils import Conv1D

from graders._core import call, fail, fresh_seed, lookup, passed, seeded, using_reference

GPT2_SMALL_PARAMS = 124_439_808  # GPT-2 small (and the offline stand-in), tied embeddings counted once


# ----------------------------------------------------------------------------- reference versions
def _in_out(layer):
    if isinstance(layer, Conv1D):
        return layer.weight.shape[0], layer.weight.shape[1]  # Conv1D stores (in, out)
    return layer.in_features, layer.out_features


class LoRALinear(nn.Module):
    """Reference LoRA wrapper, swapped in while another answer is graded."""

    def __init__(self, base, r=8, alpha=16):
        super().__init__()
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        d_in, d_out = _in_out(base)
        self.A = nn.Parameter(torch.randn(r, d_in) * 0.01)
        self.B = nn.Parameter(torch.zeros(d_out, r))
        self.scale = alpha / r

    def forward(self, x):
        return self.base(x) + (x @ self.A.T @ self.B.T) * self.scale


def _delta_as_stored(base, A, B, scale):
    """scale * B @ A in the layout the base layer stores its weight in."""
    delta = scale * (B @ A)  # (d_out, d_in), like nn.Linear.weight
    return delta.T if isinstance(base, Conv1D) else delta


# ----------------------------------------------------------------------------- helpers
def _random_base(kind, d_in, d_out):
    if kind == "Conv1D":
        layer = Conv1D(d_out, d_in)  # Conv1D(nf=out, nx=in)
        with torch.no_grad():
            layer.bias.normal_()
        return layer
    return nn.Linear(d_in, d_out, bias=(kind == "Linear"))


def _non_square_sizes():
    d_in = random.randint(5, 20)
    d_out = random.choice([n for n in range(5, 24) if n != d_in])
    return d_in, d_out


def _r_alpha():
    r = random.randint(1, 6)
    alpha = random.choice([a for a in (1, 2, 4, 8, 16, 32) if a != r])
    return r, alpha


def _shape(t):
    return tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__


def _trainable(module):
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def _max_diff(a, b):
    return (a - b).abs().max().item()


# ----------------------------------------------------------------------------- LoRALinear
def check_LoRALinear(ns):
    cls = lookup(ns, "LoRALinear")
    seed = fresh_seed()
    with seeded(seed):
        for kind in ("Linear", "Linear (no bias)", "Conv1D"):
            d_in, d_out = _non_square_sizes()
            r, alpha = _r_alpha()
            base = _random_base(kind, d_in, d_out)
            what = f"LoRALinear({kind}, {d_in} in -> {d_out} out, r={r}, alpha={alpha}) [seed {seed}]"
            layer = call(cls, base, r=r, alpha=alpha, what=what)
            _check_one_layer(layer, base, kind, d_in, d_out, r, alpha, what)
    passed(f"LoRALinear: frozen base, A (r x d_in) and B (d_out x r), B zero at start, scale = alpha/r, "
           f"forward and gradients right on nn.Linear (with and without bias) and Conv1D [seed {seed}].")


def _check_one_layer(layer, base, kind, d_in, d_out, r, alpha, what):
    if not isinstance(layer, nn.Module):
        fail(f"{what}: expected an nn.Module, got {type(layer).__name__}.")
    if getattr(layer, "base", None) is not base:
        fail(f"{what}: `self.base` should be the layer you were given (the very same object).")
    not_frozen = [name for name, p in base.named_parameters() if p.requires_grad]
    if not_frozen:
        fail(f"{what}: the base layer's {' and '.join(not_frozen)} still require gradients (requires_grad=True). "
             "Freeze the base weight and bias: only A and B may train.")
    A, B = getattr(layer, "A", None), getattr(layer, "B", None)
    for name, p in (("A", A), ("B", B)):
        if not isinstance(p, nn.Parameter):
            fail(f"{what}: `self.{name}` should be an nn.Parameter, got {type(p).__name__}.")
        if not p.requires_grad:
            fail(f"{what}: `self.{name}` must be trainable (requires_grad=True).")
    if tuple(A.shape) != (r, d_in):
        fail(f"{what}: A should have shape (r, d_in) = {(r, d_in)}, got {_shape(A)}.")
    if tuple(B.shape) != (d_out, r):
        fail(f"{what}: B should have shape (d_out, r) = {(d_out, r)}, got {_shape(B)}.")
    if B.detach().abs().max().item() != 0.0:
        fail(f"{what}: B should start at exactly zero (so the wrapped layer starts identical to the base), "
             f"but its largest entry is {B.detach().abs().max().item():.3g}.")
    if not torch.isfinite(A).all() or A.detach().abs().max().item() == 0.0:
        fail(f"{what}: A should start with small random values (not all zero): with A = 0 and B = 0 "
             "neither ever gets a gradient.")
    scale = getattr(layer, "scale", None)
    try:
        scale_value = float(scale)
    except (TypeError, ValueError):
        fail(f"{what}: `self.scale` should be the number alpha / r = {alpha / r:g}, got {scale!r}.")
    if abs(scale_value - alpha / r) > 1e-6 * max(1.0, alpha / r):
        fail(f"{what}: `self.scale` should be alpha / r = {alpha}/{r} = {alpha / r:g}, got {scale_value:g}.")
    expected_count = r * (d_in + d_out)
    if _trainable(layer) != expected_count:
        fail(f"{what}: expected r * (d_in + d_out) = {expected_count} trainable parameters (A and B only), "
             f"found {_trainable(layer)}.")

    # At the start the layer is the base layer.
    x = torch.randn(3, 2, d_in)
    with torch.no_grad():
        base_out = base(x)
        out0 = call(layer, x, what=f"{what} forward")
    if not isinstance(out0, torch.Tensor) or tuple(out0.shape) != (3, 2, d_out):
        fail(f"{what}: forward on an input of shape (3, 2, {d_in}) should return shape (3, 2, {d_out}), "
             f"got {_shape(out0)}.")
    if _max_diff(out0, base_out) > 1e-5:
        fail(f"{what}: with B = 0 the output should equal base(x); max difference {_max_diff(out0, base_out):.3g}.")

    # As if trained: random B (and a fresh A); the forward must be base(x) + x A^T B^T * alpha / r.
    with torch.no_grad():
        A.copy_(torch.randn_like(A))
        B.copy_(torch.randn_like(B))
        expected = base_out + (x @ A.T @ B.T) * (alpha / r)
    out = call(layer, x, what=f"{what} forward")
    if _max_diff(out, expected) > 1e-4 * max(1.0, expected.abs().max().item()):
        plain = base_out + x @ A.T @ B.T
        hint = (" It matches base(x) + x A^T B^T without the scale: multiply the LoRA path by self.scale."
                if _max_diff(out.detach(), plain) < 1e-4 * max(1.0, plain.abs().max().item()) else "")
        fail(f"{what}: with B set to random values the output should be base(x) + (x @ A.T @ B.T) * alpha / r; "
             f"max difference {_max_diff(out.detach(), expected):.3g}.{hint}")

    # Gradients reach A and B, and nothing else.
    layer.zero_grad(set_to_none=True)
    base.zero_grad(set_to_none=True)
    out.pow(2).mean().backward()
    for name, p in (("A", A), ("B", B)):
        if p.grad is None or p.grad.abs().max().item() == 0.0:
            fail(f"{what}: after a backward pass {name} got no gradient: is it used in forward?")
    leaked = [name for name, p in base.named_parameters() if p.grad is not None and p.grad.abs().max() > 0]
    if leaked:
        fail(f"{what}: the base layer's {', '.join(leaked)} received gradients; only A and B should.")


# ----------------------------------------------------------------------------- add_lora_to_gpt2
def _small_gpt2():
    n_embd = random.choice([32, 40, 48, 56, 64])
    n_layer = random.randint(2, 3)
    config = GPT2Config(n_embd=n_embd, n_layer=n_layer, n_head=4, vocab_size=100, n_positions=32,
                        bos_token_id=99, eos_token_id=99)
    return GPT2LMHeadModel(config).eval(), config


def check_add_lora_to_gpt2(ns):
    add_lora = lookup(ns, "add_lora_to_gpt2")
    seed = fresh_seed()
    with using_reference(ns, LoRALinear=LoRALinear), seeded(seed):
        for _ in range(2):
            model, config = _small_gpt2()
            r, alpha = _r_alpha()
            what = (f"add_lora_to_gpt2(small GPT-2 with n_embd={config.n_embd}, n_layer={config.n_layer}, "
                    f"r={r}, alpha={alpha}) [seed {seed}]")
            _check_gpt2_wrapping(add_lora, model, config, r, alpha, what)
    passed(f"add_lora_to_gpt2: every c_attn wrapped (and nothing else), the rest frozen, LoRA used in the "
           f"forward pass, counts right [seed {seed}].")


def _is_lora_param(name):
    return bool(re.search(r"\.attn\.c_attn\.(A|B)$", name))


def _check_gpt2_wrapping(add_lora, model, config, r, alpha, what):
    ids = torch.randint(0, config.vocab_size, (2, 12))
    with torch.no_grad():
        logits_before = model(ids).logits

    result = call(add_lora, model, r=r, alpha=alpha, what=what)
    if result is None:
        fail(f"{what}: returned None; return the model (after wrapping its layers).")
    if not isinstance(result, nn.Module) or not hasattr(result, "transformer"):
        fail(f"{what}: should return the GPT-2 model, got {type(result).__name__}.")
    result.eval()  # dropout off, so outputs can be compared

    blocks = result.transformer.h
    for i, block in enumerate(blocks):
        c_attn = block.attn.c_attn
        if not (isinstance(getattr(c_attn, "A", None), nn.Parameter) and hasattr(c_attn, "base")):
            fail(f"{what}: block {i}'s attn.c_attn is a plain {type(c_attn).__name__}; replace it with "
                 "LoRALinear(c_attn, r, alpha), so that GPT-2's forward pass goes through LoRA.")
        for name, module in (("attn.c_proj", block.attn.c_proj), ("mlp.c_fc", block.mlp.c_fc),
                             ("mlp.c_proj", block.mlp.c_proj)):
            if hasattr(module, "A") or hasattr(module, "B"):
                fail(f"{what}: block {i}'s {name} was wrapped too; only attn.c_attn should get LoRA.")
    named = list(result.named_parameters())
    still_trainable = [n for n, p in named if p.requires_grad and not _is_lora_param(n)]
    if still_trainable:
        fail(f"{what}: {len(still_trainable)} of GPT-2's own parameters are still trainable "
             f"(e.g. {still_trainable[0]}). Freeze every parameter of the model; only LoRA's A and B train.")
    d = config.n_embd
    expected_count = config.n_layer * r * (d + 3 * d)
    count = sum(p.numel() for _, p in named if p.requires_grad)
    if count != expected_count:
        fail(f"{what}: expected n_layer * r * (n_embd + 3 * n_embd) = {expected_count} trainable parameters, "
             f"found {count}.")

    with torch.no_grad():
        logits_init = result(ids).logits
    if _max_diff(logits_init, logits_before) > 1e-5:
        fail(f"{what}: right after adding LoRA (B = 0) the logits should be unchanged; "
             f"max difference {_max_diff(logits_init, logits_before):.3g}.")

    loss = result(ids).logits.float().logsumexp(-1).mean()
    loss.backward()
    for i, block in enumerate(blocks):
        B = block.attn.c_attn.B
        if B.grad is None or B.grad.abs().max().item() == 0.0:
            fail(f"{what}: after a backward pass block {i}'s LoRA B got no gradient: the LoRA parameters "
                 "must sit in GPT-2's forward pass (attached but unused parameters never learn).")
    with torch.no_grad():
        for block in blocks:
            block.attn.c_attn.B.normal_()
        logits_after = result(ids).logits
    if _max_diff(logits_after, logits_before) < 1e-4:
        fail(f"{what}: with every B set to random values the logits did not change: LoRA is not in the forward.")


def check_add_lora_to_gpt2_counts(ns):
    """The GPT-2 count the notebook printed, recomputed from the notebook's own model object."""
    model = lookup(ns, "gpt2_lora", callable_=False)
    if not isinstance(model, nn.Module) or not hasattr(model, "transformer"):
        fail(f"`gpt2_lora` should be the GPT-2 model with LoRA added, got {type(model).__name__}.")
    config = model.config
    r = 8
    blocks = model.transformer.h
    for i, block in enumerate(blocks):
        c_attn = block.attn.c_attn
        if not isinstance(getattr(c_attn, "A", None), nn.Parameter) or not hasattr(c_attn, "base"):
            fail(f"`gpt2_lora`: block {i}'s attn.c_attn is a plain {type(c_attn).__name__}, not a LoRA layer.")
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    outside = [n for n, _ in trainable if ".attn.c_attn." not in n]
    if outside:
        fail(f"`gpt2_lora`: parameters outside attn.c_attn are trainable: {outside[:3]} "
             f"({len(outside)} in all).")
    recomputed = sum(p.numel() for _, p in trainable)
    total = sum(p.numel() for p in model.parameters())
    expected = config.n_layer * r * (config.n_embd + 3 * config.n_embd)
    if recomputed != expected:
        fail(f"`gpt2_lora` has {recomputed:,} trainable parameters; r=8 on c_attn in {config.n_layer} blocks "
             f"gives {expected:,}.")
    reported = lookup(ns, "gpt2_trainable", callable_=False)
    if not isinstance(reported, (int, float)) and not (isinstance(reported, torch.Tensor) and reported.numel() == 1):
        fail(f"`gpt2_trainable` should be a number, got {type(reported).__name__}.")
    if int(reported) != recomputed:
        fail(f"`gpt2_trainable` is {int(reported):,}, but counting gpt2_lora's trainable parameters gives "
             f"{recomputed:,}.")
    reported_total = lookup(ns, "gpt2_total", callable_=False)
    if int(reported_total) != total:
        fail(f"`gpt2_total` is {int(reported_total):,}, but gpt2_lora has {total:,} parameters.")
    if config.n_embd == 768 and config.n_layer == 12 and total != GPT2_SMALL_PARAMS + expected:
        fail(f"`gpt2_lora` should hold GPT-2's {GPT2_SMALL_PARAMS:,} parameters plus {expected:,} LoRA ones, "
             f"found {total:,}.")
    passed(f"gpt2_lora: {recomputed:,} trainable of {total:,}, all of them LoRA A and B inside attn.c_attn.")


# ----------------------------------------------------------------------------- merge_lora
def check_merge_lora(ns):
    merge = lookup(ns, "merge_lora")
    seed = fresh_seed()
    with using_reference(ns, LoRALinear=LoRALinear), seeded(seed):
        for kind in ("Linear", "Linear (no bias)", "Conv1D"):
            d_in, d_out = _non_square_sizes()
            r, alpha = _r_alpha()
            base = _random_base(kind, d_in, d_out)
            layer = LoRALinear(base, r=r, alpha=alpha)
            with torch.no_grad():
                layer.A.normal_()
                layer.B.normal_()  # as if trained
            what = f"merge_lora(LoRA on {kind}, {d_in} in -> {d_out} out, r={r}, alpha={alpha}) [seed {seed}]"
            _check_one_merge(merge, layer, base, kind, r, alpha, what)
    passed(f"merge_lora: plain layer of the base's type, weight = W + (alpha/r) B A in the layer's layout, "
           f"bias unchanged, same outputs, on nn.Linear and Conv1D [seed {seed}].")


def _lora_state(layer):
    """Copies of what merge_lora must leave alone: the LoRA layer's base weight and bias, A and B."""
    state = {}
    for name, owner, attr in (("layer.base.weight", layer.base, "weight"), ("layer.base.bias", layer.base, "bias"),
                              ("layer.A", layer, "A"), ("layer.B", layer, "B")):
        value = getattr(owner, attr, None)
        state[name] = value.detach().clone() if isinstance(value, torch.Tensor) else None
    if layer.base.bias is None:
        state.pop("layer.base.bias")
    return state


def _check_one_merge(merge, layer, base, kind, r, alpha, what):
    x = torch.randn(4, 3, base.weight.shape[0] if isinstance(base, Conv1D) else base.in_features)
    with torch.no_grad():
        expected_out = layer(x)
        expected_w = base.weight + _delta_as_stored(base, layer.A, layer.B, alpha / r)
        expected_b = None if base.bias is None else base.bias.clone()
        w0 = base.weight.detach().clone()
        untouched = _lora_state(layer)  # merge_lora promises to leave `layer` as it was
    merged = call(merge, layer, what=what)
    if type(merged) is not type(base):
        fail(f"{what}: should return a plain {type(base).__name__} (the type of layer.base), "
             f"got {type(merged).__name__}.")
    lora_left = [n for n, _ in merged.named_parameters() if n.split(".")[-1] in ("A", "B")]
    if lora_left or hasattr(merged, "A") or hasattr(merged, "B"):
        fail(f"{what}: the merged layer still carries LoRA parameters; fold them into the weight and drop them.")
    if tuple(merged.weight.shape) != tuple(base.weight.shape):
        fail(f"{what}: merged weight should keep the shape {tuple(base.weight.shape)}, got {_shape(merged.weight)}.")
    tol = 1e-5 * max(1.0, expected_w.abs().max().item())
    got = merged.weight.detach()
    if _max_diff(got, expected_w) > tol:
        hint = ""
        if _max_diff(got, w0 + _delta_as_stored(base, layer.A, layer.B, 1.0).detach()) < tol:
            hint = " It matches W + B @ A without the scale alpha / r."
        fail(f"{what}: merged weight should be W + (alpha/r) * B @ A (transposed for Conv1D, which stores "
             f"(in, out)); max difference {_max_diff(got, expected_w):.3g}.{hint}")
    if expected_b is None:
        if merged.bias is not None:
            fail(f"{what}: the base layer has no bias, so the merged layer should have none either.")
    elif merged.bias is None or _max_diff(merged.bias.detach(), expected_b) > 1e-6:
        fail(f"{what}: the bias should be the base layer's bias, unchanged.")
    with torch.no_grad():
        out = call(merged, x, what=f"{what}: the merged layer's forward")
    if _max_diff(out, expected_out) > 1e-4 * max(1.0, expected_out.abs().max().item()):
        fail(f"{what}: the merged layer's outputs differ from the LoRA layer's (computed before merging) by "
             f"up to {_max_diff(out, expected_out):.3g}.")
    changed = [name for name, value in _lora_state(layer).items()
               if value is None or untouched[name] is None or value.shape != untouched[name].shape
               or not torch.equal(value, untouched[name])]
    if changed:
        fail(f"{what}: merge_lora modified the LoRA layer it was given (changed by the call: {', '.join(changed)}). "
             "The merged layer it returned is right, but the LoRA layer is no longer the trained one (its forward "
             "now adds the update twice): merge into a copy of layer.base (copy.deepcopy) and leave `layer` as it was.")
