"""Exercise 3's checks, the collector's half (LoRA from scratch): `LoRALinear`, `add_lora_to_gpt2`, the notebook's
GPT-2 counts, `merge_lora`.

Each collector builds what the judge's request describes (layers from the judge's tensors, small GPT-2 models
from its seeds), calls the student's code on them and reports what came back: types, shapes, flags, outputs,
gradients. The judge (judges/ex3_lora_from_scratch.py) computes what those should be and decides.

Nothing here is LoRA: while `add_lora_to_gpt2` is collected, the notebook's `LoRALinear` is replaced by a *probe*
(`lora_probe`), a wrapper that records how it was called and adds a gated random projection the judge can see in
the logits; `merge_lora` gets a plain container of `base`, `A`, `B` and `scale`, with no forward pass at all.
The GPT-2 fixtures (`small_gpt2`, `lora_probe`) are shared with the judge, which builds the same ones."""
import contextlib
import random

import torch
import torch.nn as nn
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.pytorch_utils import Conv1D

from graders import _wire
from graders._collect import answer, attempt, check, lookup, seeded, standing_in, tensor

MAX_NAMES = 2000  # parameter names reported at most (GPT-2 small has 148 tensors; wrapped, a few more)


# ------------------------------------------------------------------------------------ the hidden tests
def check_LoRALinear(ns):
    check("ex3_lora_from_scratch", "LoRALinear", ns, collect_LoRALinear)


def check_add_lora_to_gpt2(ns):
    check("ex3_lora_from_scratch", "add_lora_to_gpt2", ns, collect_add_lora_to_gpt2)


def check_add_lora_to_gpt2_counts(ns):
    check("ex3_lora_from_scratch", "add_lora_to_gpt2_counts", ns, collect_add_lora_to_gpt2_counts)


def check_merge_lora(ns):
    check("ex3_lora_from_scratch", "merge_lora", ns, collect_merge_lora)


# ------------------------------------------------------------------------------------ fixtures (both sides)
def base_layer(kind: str, weight, bias):
    """A layer of `kind` ("Linear", "Linear (no bias)", "Conv1D") holding exactly `weight` (and `bias`), float32.

    nn.Linear stores its weight (d_out, d_in); Conv1D (GPT-2's projections) stores it (d_in, d_out)."""
    weight = torch.as_tensor(weight, dtype=torch.float32)
    if kind == "Conv1D":
        layer = Conv1D(weight.shape[1], weight.shape[0])  # Conv1D(nf=d_out, nx=d_in)
    else:
        layer = nn.Linear(weight.shape[1], weight.shape[0], bias=(kind == "Linear"), dtype=torch.float32)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if layer.bias is not None:
            layer.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
    return layer


def small_gpt2(config: dict, seed: int):
    """A small GPT-2 with random weights, the same for the same (config, seed) in any process of this venv."""
    settings = dict(n_head=4, vocab_size=100, n_positions=32, bos_token_id=99, eos_token_id=99)
    settings.update({key: int(config[key]) for key in ("n_embd", "n_layer", "n_head", "vocab_size", "n_positions")
                     if key in config})
    with seeded(seed), _float32_default():
        model = GPT2LMHeadModel(GPT2Config(**settings, attn_implementation="eager"))
    return model.float().eval()


def lora_probe(seed: int):
    """The stand-in for `LoRALinear` while `add_lora_to_gpt2` is collected: a new class for each request.

    It is not LoRA and answers no task: it keeps `base`, records the (r, alpha) it was given, freezes nothing,
    and adds `gate * (x @ projection)`: a fixed random projection (the same for every layer of one shape and
    `seed`) behind one trainable scalar `gate` that starts at zero. So the model is unchanged at first, a
    gradient reaches every probe that sits in the forward pass, and setting the gates changes the logits by
    exactly what the judge computes on its own copy."""

    class LoRAProbe(nn.Module):
        def __init__(self, base, r=8, alpha=16):
            super().__init__()
            if isinstance(base, Conv1D):
                d_in, d_out = base.weight.shape[0], base.weight.shape[1]
            elif isinstance(base, nn.Linear):
                d_in, d_out = base.in_features, base.out_features
            else:
                got = "another LoRALinear" if isinstance(base, LoRAProbe) else f"a {type(base).__name__}"
                raise TypeError(f"LoRALinear wraps an nn.Linear or a Conv1D, not {got}")
            self.base = base
            self.called_with = {"r": r, "alpha": alpha}
            generator = torch.Generator().manual_seed(seed)
            projection = torch.randn(d_in, d_out, generator=generator, dtype=torch.float32) / d_in ** 0.5
            self.register_buffer("projection", projection.to(base.weight.device), persistent=False)
            self.gate = nn.Parameter(torch.zeros((), dtype=torch.float32, device=base.weight.device))

        def forward(self, x):
            return self.base(x) + self.gate * (x @ self.projection)

    return LoRAProbe


@contextlib.contextmanager
def _float32_default():
    saved = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        yield
    finally:
        torch.set_default_dtype(saved)


@contextlib.contextmanager
def _notebook_rng_kept():
    """The notebook's random state (torch and random) as it was, whatever the student's code draws."""
    state = random.getstate()
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            random.setstate(state)


# ------------------------------------------------------------------------------------ reading objects safely
def _run(fn, *args, **kwargs):
    """(what `fn` returned or None, its call record): the record's value is the result's type name only."""
    box = []
    record = attempt(lambda: box.append(fn(*args, **kwargs)))
    if "value" in record:
        record["value"] = {"$object": _wire._type_name(box[0])}
    return (box[0] if box else None), record


def _get(obj, name, default=None):
    try:
        return getattr(obj, name, default)
    except Exception:  # noqa: BLE001 - a student's __getattr__ may raise anything: the attribute is missing
        return default


def _safely(fn, default=None):
    try:
        return fn()
    except Exception:  # noqa: BLE001 - what cannot be read is reported as missing
        return default


def _type(obj) -> str:
    return _wire._type_name(obj)


def _named_parameters(module) -> list:
    return _safely(lambda: list(module.named_parameters())[:MAX_NAMES], [])


def _nonzero(t) -> bool:
    return _safely(lambda: isinstance(t, torch.Tensor) and bool(t.detach().abs().max().item() != 0.0), False)


def _tensor_report(value) -> dict:
    """What a tensor attribute (A, B) is: its type, whether it is an nn.Parameter, whether it trains, its values."""
    return {"type": _type(value), "is_parameter": isinstance(value, nn.Parameter),
            "requires_grad": bool(_get(value, "requires_grad", False)) if isinstance(value, torch.Tensor) else False,
            "value": _wire.encode(value) if isinstance(value, torch.Tensor) else None}


# ------------------------------------------------------------------------------------ LoRALinear
def collect_LoRALinear(ns, request):
    """request: {"cases": [{"kind", "r", "alpha", "weight", "bias", "x", "A", "B"}, ...]} (tensors encoded):
    for each, the student's LoRALinear around a layer holding weight and bias, run on x at its start, then with
    A and B set to the request's values (as if trained), then a backward pass."""
    data, fn = answer(ns, "LoRALinear")
    if fn is None:
        return data
    with _notebook_rng_kept():
        data["cases"] = [_lora_case(fn, case) for case in request["cases"]]
    return data


def _lora_case(cls, case):
    base = base_layer(case["kind"], tensor(case["weight"]), tensor(case["bias"]))
    x = tensor(case["x"]).float()
    layer, made = _run(cls, base, r=case["r"], alpha=case["alpha"])
    out = {"made": made, "is_module": isinstance(layer, nn.Module), "type": _type(layer)}
    if layer is None:
        return out
    A, B = _get(layer, "A"), _get(layer, "B")
    out.update({
        "base_is_given": _get(layer, "base") is base,
        "base_trainable": [name for name, p in base.named_parameters() if p.requires_grad],
        "A": _tensor_report(A), "B": _tensor_report(B),
        "scale": _wire.encode(_get(layer, "scale")),
        "trainable": _safely(lambda: sum(int(p.numel()) for _, p in _named_parameters(layer) if p.requires_grad)),
    })
    with torch.no_grad():
        out["at_start"] = attempt(layer, x)

    # As if trained: A and B hold the request's values; then a forward pass with gradients, and a backward one.
    given_A, given_B = tensor(case["A"]), tensor(case["B"])
    fits = all(isinstance(p, torch.Tensor) and tuple(p.shape) == tuple(v.shape)
               for p, v in ((A, given_A), (B, given_B)))
    out["set"] = bool(fits and _safely(lambda: _set_values((A, given_A), (B, given_B)) or True, False))
    if not out["set"]:
        return out
    _safely(lambda: layer.zero_grad(set_to_none=True))
    base.zero_grad(set_to_none=True)
    with torch.enable_grad():
        result, out["trained"] = _run(layer, x)
        if "value" in out["trained"]:
            out["trained"]["value"] = _wire.encode(result)
        if not isinstance(result, torch.Tensor):
            return out
        out["backward"] = attempt(lambda: result.pow(2).mean().backward())
    out["grads"] = {"A": _wire.encode(_get(A, "grad")), "B": _wire.encode(_get(B, "grad"))}
    out["base_grads"] = [name for name, p in base.named_parameters() if _nonzero(p.grad)]
    return out


def _set_values(*pairs):
    with torch.no_grad():
        for param, values in pairs:
            param.copy_(values.to(device=param.device, dtype=param.dtype))


# ------------------------------------------------------------------------------------ add_lora_to_gpt2
BLOCK_LAYERS = (("attn.c_attn", ("attn", "c_attn")), ("attn.c_proj", ("attn", "c_proj")),
                ("mlp.c_fc", ("mlp", "c_fc")), ("mlp.c_proj", ("mlp", "c_proj")))


def collect_add_lora_to_gpt2(ns, request):
    """request: {"probe_seed": int, "models": [{"config": {...}, "seed", "r", "alpha", "ids", "gates"}, ...]}:
    for each, a small GPT-2 built from (config, seed) goes through the student's add_lora_to_gpt2(model, r=r,
    alpha=alpha) with the probe as `LoRALinear`; reported: how every block's layers were wrapped, what trains,
    the logits on ids, which probes a backward pass reached, and the logits with block i's gate set to gates[i]."""
    data, fn = answer(ns, "add_lora_to_gpt2")
    if fn is None:
        return data
    with _notebook_rng_kept():
        data["models"] = []
        for spec in request["models"]:
            probe = lora_probe(request["probe_seed"])
            with standing_in(ns, {"LoRALinear": probe}):
                data["models"].append(_gpt2_case(fn, probe, spec))
    return data


def _layer(block, path):
    module = block
    for name in path:
        module = _get(module, name)
    return module


def _gpt2_case(fn, probe, spec):
    model = small_gpt2(spec["config"], spec["seed"])
    ids = torch.tensor(spec["ids"], dtype=torch.long)
    originals = [{name: _layer(block, path) for name, path in BLOCK_LAYERS} for block in model.transformer.h]
    result, made = _run(fn, model, r=spec["r"], alpha=spec["alpha"])
    out = {"made": made, "returned_none": result is None, "is_module": isinstance(result, nn.Module),
           "type": _type(result), "has_transformer": _get(result, "transformer") is not None}
    if not out["is_module"] or not out["has_transformer"]:
        return out
    blocks = _safely(lambda: list(result.transformer.h), [])
    out["blocks"] = [_block_report(probe, block, originals) for block in blocks]
    _safely(lambda: result.eval())
    out["trainable"] = [[name, int(p.numel())] for name, p in _named_parameters(result) if p.requires_grad]
    with torch.no_grad():
        out["at_start"] = attempt(lambda: result(ids).logits)

    # A backward pass: which probes does it reach? Then the gates set: does GPT-2's forward pass use them?
    probes = [_layer(block, ("attn", "c_attn")) for block in blocks]
    probes = [p if type(p) is probe else None for p in probes]
    _safely(lambda: result.zero_grad(set_to_none=True))
    with torch.enable_grad():
        out["backward"] = attempt(lambda: result(ids).logits.float().logsumexp(-1).mean().backward())
    out["gate_grads"] = [None if p is None else _wire.encode(p.gate.grad) for p in probes]
    with torch.no_grad():
        for p, gate in zip(probes, spec["gates"]):
            if p is not None:
                p.gate.fill_(float(gate))
        out["gates_set"] = attempt(lambda: result(ids).logits)
    return out


def _block_report(probe, block, originals):
    """How one block of the returned model holds its four projections."""
    report = {}
    for name, path in BLOCK_LAYERS:
        layer = _layer(block, path)
        entry = {"type": _type(layer), "probe": type(layer) is probe,
                 "lora_like": any(_get(layer, name) is not None for name in ("A", "B", "lora_A", "lora_B"))}
        if entry["probe"]:
            inner = layer.base
            entry.update({"r": _wire.encode(layer.called_with["r"]), "alpha": _wire.encode(layer.called_with["alpha"]),
                          "wraps_probe": type(inner) is probe,
                          "wraps_block": next((i for i, own in enumerate(originals) if own[name] is inner), None),
                          "trains": bool(layer.gate.requires_grad)})
        report[name] = entry
    return report


# ------------------------------------------------------------------------------------ the notebook's counts
def collect_add_lora_to_gpt2_counts(ns, request):
    """The notebook's own `gpt2_lora` (how its blocks hold c_attn, what trains, its size and config) and the
    numbers the notebook printed, `gpt2_trainable` and `gpt2_total`."""
    data = {"model": lookup(ns, "gpt2_lora"), "gpt2_trainable": lookup(ns, "gpt2_trainable"),
            "gpt2_total": lookup(ns, "gpt2_total")}
    for name in ("gpt2_trainable", "gpt2_total"):
        if data[name]["defined"]:
            data[name]["value"] = _wire.encode(ns[name])
    if not data["model"]["defined"]:
        return data
    model = ns["gpt2_lora"]
    report = {"is_module": isinstance(model, nn.Module), "has_transformer": _get(model, "transformer") is not None}
    data["model"]["report"] = report
    if not report["is_module"] or not report["has_transformer"]:
        return data
    config = _get(model, "config")
    report["config"] = {key: _wire.encode(_get(config, key)) for key in ("n_layer", "n_embd")}
    blocks = _safely(lambda: list(model.transformer.h), [])
    report["c_attn"] = [{"type": _type(c), "has_A": isinstance(_get(c, "A"), nn.Parameter),
                         "has_base": _get(c, "base") is not None}
                        for c in (_layer(block, ("attn", "c_attn")) for block in blocks)]
    named = _safely(lambda: list(model.named_parameters()), [])
    report["trainable"] = [[name, int(p.numel())] for name, p in named if p.requires_grad][:MAX_NAMES]
    report["total"] = sum(int(p.numel()) for _, p in named)
    return data


# ------------------------------------------------------------------------------------ merge_lora
class TrainedLoRA(nn.Module):
    """What merge_lora reads of a trained LoRA layer, and nothing more: `base`, `A`, `B` and `scale` (no forward)."""

    def __init__(self, base, A, B, scale):
        super().__init__()
        self.base, self.A, self.B, self.scale = base, nn.Parameter(A), nn.Parameter(B), scale


def collect_merge_lora(ns, request):
    """request: {"cases": [{"kind", "weight", "bias", "A", "B", "scale", "x"}, ...]}: for each, merge_lora on a
    TrainedLoRA holding a layer of `kind` with that weight and bias; reported: the returned layer's type,
    parameters, weight, bias and output on x, and the TrainedLoRA's base weight and bias, A and B afterwards."""
    data, fn = answer(ns, "merge_lora")
    if fn is None:
        return data
    with _notebook_rng_kept():
        data["cases"] = [_merge_case(fn, case) for case in request["cases"]]
    return data


def _merge_case(fn, case):
    base = base_layer(case["kind"], tensor(case["weight"]), tensor(case["bias"]))
    layer = TrainedLoRA(base, tensor(case["A"]).float(), tensor(case["B"]).float(), case["scale"])
    x = tensor(case["x"]).float()
    merged, made = _run(fn, layer)
    out = {"made": made, "type": _type(merged)}
    if merged is None and "raised" in made:
        return out
    out["parameters"] = [name for name, _ in _named_parameters(merged)] if isinstance(merged, nn.Module) else []
    out["has_A_or_B"] = _get(merged, "A") is not None or _get(merged, "B") is not None
    out["weight"] = _wire.encode(_get(merged, "weight"))
    out["bias"] = _wire.encode(_get(merged, "bias"))
    with torch.no_grad():
        out["output"] = attempt(merged, x) if callable(merged) else None
    held = _get(layer, "base")
    out["after"] = {"base.weight": _wire.encode(_get(held, "weight")), "base.bias": _wire.encode(_get(held, "bias")),
                    "A": _wire.encode(_get(layer, "A")), "B": _wire.encode(_get(layer, "B"))}
    return out
