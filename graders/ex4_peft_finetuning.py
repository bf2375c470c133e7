"""Exercise 4's checks (LoRA with PEFT), the collector's half: each reports what the notebook's names are
and do on the judge's inputs (judges/ex4_peft_finetuning.py draws them, applies the real PEFT itself and
decides) as plain data.

The small GPT-2s with LoRA that merge_adapter and train_step are tried on are fixtures: built here from the
recipe the judge hands over (`build_lora_gpt2`), and by the judge from the same recipe in its own process."""
import contextlib
import dataclasses
import warnings

from graders import _wire
from graders._collect import answer, attempt, check, lookup, seeded, tensor


# ------------------------------------------------------------------------------------------ fixtures
@contextlib.contextmanager
def _quiet():
    """PEFT warns that GPT-2's Conv1D layers need fan_in_fan_out (it sets that itself), and more."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def skeleton(gpt2: dict = None):
    """A GPT-2 (GPT2Config(**gpt2); GPT-2 small when None) on the meta device: shapes without memory."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel
    with torch.device("meta"), _quiet():
        return GPT2LMHeadModel(GPT2Config(**(gpt2 or {})))


def build_lora_gpt2(recipe: dict):
    """A small GPT-2 wrapped by PEFT, on the CPU, the same in every process for the same recipe:
    {"seed", "gpt2": GPT2Config's arguments, "lora": LoraConfig's, "init": {"match": part of a parameter's
    name, "std": ...}} (the matching LoRA tensors drawn from N(0, std), as if trained)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import GPT2Config, GPT2LMHeadModel
    with seeded(recipe["seed"]), _quiet():
        model = get_peft_model(GPT2LMHeadModel(GPT2Config(**recipe["gpt2"])), LoraConfig(**recipe["lora"]))
        with torch.no_grad():
            for name, p in model.named_parameters():
                if recipe["init"]["match"] in name:
                    p.normal_(mean=0.0, std=recipe["init"]["std"])
    return model


def lora_layers(model) -> list:
    return [name for name, m in model.named_modules() if hasattr(m, "lora_A")]


# ------------------------------------------------------------------------------------- what is reported
def _config_report(ns: dict, name: str) -> dict:
    """A LoraConfig's fields as plain data (every dataclass field: the judge picks what it rebuilds)."""
    found = lookup(ns, name)
    report = {"answer": found}
    if not found["defined"]:
        return report
    from peft import LoraConfig
    cfg = ns[name]
    report["is_lora_config"] = isinstance(cfg, LoraConfig)
    if report["is_lora_config"]:
        report["fields"] = {f.name: _wire.encode(getattr(cfg, f.name, None)) for f in dataclasses.fields(cfg)}
    return report


def _peft_model_report(pm) -> dict:
    from peft import PeftModel
    report = {"is_peft_model": isinstance(pm, PeftModel)}
    if not report["is_peft_model"]:
        return report
    base = pm.get_base_model()
    report["base_class"] = type(base).__name__
    report["base_params"] = sum(p.numel() for n, p in base.named_parameters() if "lora_" not in n)
    report["lora_modules"] = [n[: -len(".lora_A")] for n, _ in pm.named_modules() if n.endswith(".lora_A")]
    active = pm.peft_config.get(pm.active_adapter) if isinstance(pm.active_adapter, str) else None
    report["active"] = None if active is None else {"r": _wire.encode(getattr(active, "r", None)),
                                                    "lora_alpha": _wire.encode(getattr(active, "lora_alpha", None))}
    report["trainable"] = [[n, p.numel()] for n, p in pm.named_parameters() if p.requires_grad]
    report["total"] = sum(p.numel() for p in pm.parameters())
    return report


# ------------------------------------------------------------------------------------- lora_config
def _collect_lora_config(ns, request):
    return _config_report(ns, "lora_config")


def check_lora_config(ns):
    check("ex4_peft_finetuning", "lora_config", ns, _collect_lora_config)


# -------------------------------------------------------------------------------------- peft_model
def _collect_peft_model(ns, request):
    found = lookup(ns, "peft_model")
    data = {"answer": found, "lora_config": _config_report(ns, "lora_config")}
    if found["defined"]:
        data["model"] = _peft_model_report(ns["peft_model"])
    return data


def check_peft_model(ns):
    check("ex4_peft_finetuning", "peft_model", ns, _collect_peft_model)


# -------------------------------------------------------------------------------- lora_param_count
@contextlib.contextmanager
def peft_switched_off(calls: list):
    """PEFT cannot put adapters on any model inside this block (every way in, get_peft_model, LoraModel,
    inject_adapter_in_model, goes through BaseTuner.inject_adapter): lora_param_count is asked for the count
    without PEFT. Each attempt is noted in `calls` and refused with an error that says so."""
    from peft.tuners.tuners_utils import BaseTuner
    inject = BaseTuner.inject_adapter

    def refused(*args, **kwargs):
        calls.append("inject_adapter")
        raise RuntimeError("PEFT is switched off while lora_param_count runs: count by PEFT's rule yourself")

    BaseTuner.inject_adapter = refused
    try:
        yield
    finally:
        BaseTuner.inject_adapter = inject


def _collect_lora_param_count(ns, request):
    """request: {"cases": [{"gpt2": GPT2Config's arguments or None, "targets": [...], "r": int,
    "container": "list" or "set"}]}: the student's function on a meta skeleton of each GPT-2, with PEFT
    switched off (the question is the count PEFT would give, worked out without it)."""
    import json
    data, fn = answer(ns, "lora_param_count")
    if fn is None:
        return data
    built, records, peft_calls = {}, [], []
    for case in request["cases"]:
        key = json.dumps(case["gpt2"], sort_keys=True)
        if key not in built:
            built[key] = skeleton(case["gpt2"])
        targets = set(case["targets"]) if case["container"] == "set" else list(case["targets"])
        with peft_switched_off(peft_calls):
            records.append(attempt(fn, built[key], targets, case["r"]))
    data["calls"] = records
    data["peft_called"] = bool(peft_calls)
    return data


def check_lora_param_count(ns):
    check("ex4_peft_finetuning", "lora_param_count", ns, _collect_lora_param_count)


# ---------------------------------------------------------------------------- attention_only_targets
def _collect_attention_only_targets(ns, request):
    found = lookup(ns, "attention_only_targets")
    data = {"answer": found}
    if found["defined"]:
        data["value"] = _wire.encode(ns["attention_only_targets"])
    return data


def check_attention_only_targets(ns):
    check("ex4_peft_finetuning", "attention_only_targets", ns, _collect_attention_only_targets)


# ----------------------------------------------------------------------------------- merge_adapter
def _forward(model, ids):
    import torch
    with torch.no_grad():
        return model(input_ids=ids).logits


def _collect_merge_adapter(ns, request):
    """request: {"recipe": build_lora_gpt2's, "ids": token ids}. Reports what merge_adapter returned (its
    kind, LoRA layers, parameter count, logits on the ids) and the adapter model after the call (its LoRA
    layers, state-dict keys, the tensors that are no longer bit for bit what they were, its logits)."""
    import torch
    from peft import PeftModel
    from transformers import PreTrainedModel
    data, fn = answer(ns, "merge_adapter")
    if fn is None:
        return data
    adapter = build_lora_gpt2(request["recipe"]).eval()
    ids = tensor(request["ids"])
    before = {k: t.detach().clone() for k, t in adapter.state_dict().items()}
    returned = []
    data["call"] = attempt(lambda: returned.append(fn(adapter)))
    if returned:
        merged = returned[0]
        got = {"type": _wire._type_name(merged), "is_none": merged is None,
               "is_peft_model": isinstance(merged, PeftModel),
               "is_pretrained_model": isinstance(merged, PreTrainedModel)}
        if isinstance(merged, torch.nn.Module):
            got["lora_layers"] = lora_layers(merged)
            got["parameters"] = sum(p.numel() for p in merged.parameters())
            got["logits"] = attempt(lambda: _forward(merged.eval(), ids))
        data["merged"] = got
    after = adapter.state_dict()
    changed = {k: after[k].detach().clone() for k in before if k in after and
               (after[k].shape != before[k].shape or after[k].dtype != before[k].dtype
                or not torch.equal(after[k].detach().to("cpu"), before[k].to("cpu")))}
    data["adapter_after"] = {"lora_layers": lora_layers(adapter), "keys": list(after),
                             "changed": _wire.encode(changed),
                             "logits": attempt(lambda: _forward(adapter.eval(), ids))}
    return data


def check_merge_adapter(ns):
    check("ex4_peft_finetuning", "merge_adapter", ns, _collect_merge_adapter)


# ------------------------------------------------------------------------------------- train_step
def _collect_train_step(ns, request):
    """request: {"recipe": build_lora_gpt2's, "batches": [token ids...], "lr": ...}: train_step on each batch
    in turn, with one fresh SGD over the trainable parameters; after each step, every parameter's values."""
    import torch
    data, fn = answer(ns, "train_step")
    if fn is None:
        return data
    model = build_lora_gpt2(request["recipe"]).train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=request["lr"])
    steps = []
    for batch in request["batches"]:
        record = attempt(fn, model, tensor(batch), optimizer)
        steps.append(record)
        if "raised" in record:
            break
        record["parameters"] = _wire.encode({n: p.detach().clone() for n, p in model.named_parameters()})
    data["steps"] = steps
    return data


def check_train_step(ns):
    check("ex4_peft_finetuning", "train_step", ns, _collect_train_step)
