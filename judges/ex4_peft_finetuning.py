"""Exercise 4's judges (LoRA with PEFT). Every expected number is the real PEFT's, computed here: a config the
notebook reports is rebuilt as a LoraConfig in this process and applied to GPT-2 skeletons on the `meta`
device (the real architecture, no memory, no download); merge_adapter and train_step are judged against
this process's own copy of the small model the notebook was handed (built from the same recipe and seed,
graders.ex4_peft_finetuning.build_lora_gpt2) and the reference answers below. No answer depends on another
one being right: peft_model is judged against what get_peft_model makes of the notebook's own lora_config."""
import contextlib
import dataclasses
import functools
import json
import logging
import random
import warnings

from judges._core import (Malformed, MetaTensor, Opaque, call, defined, describe, fail, flag, integer, items,
                          named_sizes, part, records, text, value)

GPT2_PARAMS = 124_439_808
TRAINABLE = 811_008  # r=8 on every c_attn, attn.c_proj and mlp.c_proj
TOTAL_WITH_LORA = 125_250_816
ATTENTION_ONLY = 442_368  # r=8 on c_attn and attn.c_proj only
PREFIX = "base_model.model."
# The LoraConfig fields rebuilt here: those that decide where PEFT puts LoRA, what it trains and how it wraps
# the model. Others (init_lora_weights, loftq_config, runtime_config...) change no module and no count.
STRUCTURE = ("task_type", "inference_mode", "r", "target_modules", "exclude_modules", "lora_alpha", "lora_dropout",
             "fan_in_fan_out", "bias", "use_rslora", "modules_to_save", "layers_to_transform", "layers_pattern",
             "rank_pattern", "alpha_pattern", "trainable_token_indices", "use_dora", "layer_replication",
             "lora_bias", "target_parameters", "ensure_weight_tying")


# ----------------------------------------------------------------------------------------- helpers
def _small_gpt2(**overrides) -> dict:
    """GPT2Config's arguments for a small GPT-2 (a vocabulary of its own needs its own special tokens)."""
    return {"bos_token_id": 0, "eos_token_id": 0, **overrides}


@contextlib.contextmanager
def _quiet():
    """The references' own warnings and library logs kept out of the output (PEFT warns that GPT-2's Conv1D
    layers need fan_in_fan_out, which it sets itself; transformers logs its loss choice once...)."""
    loggers = [logging.getLogger(name) for name in ("transformers", "peft")]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


def _skeleton(gpt2: dict = None):
    """GPT-2 (or a smaller sibling) on the meta device: shapes without memory."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel
    with torch.device("meta"), _quiet():
        return GPT2LMHeadModel(GPT2Config(**(gpt2 or {})))


def _strip(name: str) -> str:
    return name[len(PREFIX):] if name.startswith(PREFIX) else name


@functools.lru_cache(maxsize=64)
def _applied(lora_json: str, gpt2_json: str):
    """What the real PEFT makes of LoraConfig(**lora) on a GPT-2 skeleton: (LoRA module names, trainable,
    total, names of the trainable parameters). Arguments as JSON (graders/_wire.py), for the cache."""
    import torch
    from graders import _wire
    from peft import LoraConfig, get_peft_model
    lora, gpt2 = _wire.decode(json.loads(lora_json)), json.loads(gpt2_json)
    lora = {k: set(v) if isinstance(v, frozenset) else v for k, v in lora.items()}  # PEFT takes sets, lists, str
    _screen_patterns(lora, [name for name, _ in _skeleton(gpt2).named_modules()])
    # A and B made on the meta device too: the same modules and counts, and no memory whatever r a config asks for
    with torch.device("meta"), _quiet():
        wrapped = get_peft_model(_skeleton(gpt2), LoraConfig(**lora))
    names = frozenset(_strip(n[: -len(".lora_A")]) for n, _ in wrapped.named_modules() if n.endswith(".lora_A"))
    trainable, total = wrapped.get_nb_trainable_parameters()
    may_train = frozenset(n for n, p in wrapped.named_parameters() if p.requires_grad)
    return names, trainable, total, may_train


def _patterns(lora: dict) -> list:
    """What PEFT will run as regular expressions against module names: a str target_modules or exclude_modules,
    layers_pattern, and the keys of rank_pattern and alpha_pattern."""
    found = [lora.get(k) for k in ("target_modules", "exclude_modules") if isinstance(lora.get(k), str)]
    layers = lora.get("layers_pattern")
    found += [layers] if isinstance(layers, str) else [p for p in (layers or []) if isinstance(p, str)]
    for k in ("rank_pattern", "alpha_pattern"):
        found += [p for p in (lora.get(k) or {}) if isinstance(p, str)]
    return found


SCREEN = """import json, re, sys
patterns, names = json.load(sys.stdin)
for pattern in patterns:
    try:
        compiled = re.compile(pattern)
    except re.error:
        continue
    for name in names:
        compiled.fullmatch(name), compiled.search(name)
"""


def _screen_patterns(lora: dict, names: list) -> None:
    """A pattern is the notebook's text, which PEFT runs with `re` against module names: one that backtracks
    without end would stall the worker, and with it a class's grading. So each is first tried on every module
    name, with `re` too, in a throw-away process with a time limit, and refused if it takes too long."""
    import subprocess
    import sys
    patterns = _patterns(lora)
    if not patterns:
        return
    if any(len(p) > 1000 for p in patterns):
        fail("a pattern in lora_config is over 1,000 characters long: name the modules instead.")
    try:
        subprocess.run([sys.executable, "-I", "-c", SCREEN], input=json.dumps([patterns, names]), text=True,
                       capture_output=True, timeout=5)
    except subprocess.TimeoutExpired:
        fail(f"a pattern in lora_config ({', '.join(repr(p[:60]) for p in patterns)}) takes too long to match "
             "GPT-2's module names (it backtracks without end): name the modules, or write a simpler pattern.")


def peft_applied(lora: dict, gpt2: dict = None):
    """(LoRA module names, trainable, total, trainable parameter names) for LoraConfig(**lora) on GPT-2."""
    from graders import _wire
    return _applied(json.dumps(_wire.encode(lora), sort_keys=True), json.dumps(gpt2, sort_keys=True))


def _kinds(names) -> dict:
    """{'attn.c_attn': 12, 'mlp.c_proj': 12, ...}: module names grouped by what follows the block index."""
    out = {}
    for name in names:
        parts = name.split(".")
        kind = ".".join(parts[3:]) if len(parts) > 3 and parts[1] == "h" else name
        out[kind] = out.get(kind, 0) + 1
    return dict(sorted(out.items()))


def _reference_modules():
    return peft_applied({"r": 8, "target_modules": ["c_attn", "c_proj"]})[0]


LESSON_CONFIG = {"r": 8, "lora_alpha": 16, "target_modules": ["c_attn", "c_proj"], "lora_dropout": 0.05,
                 "bias": "none", "task_type": "CAUSAL_LM"}


def _peft_rule(name, target):
    return name == target or name.endswith("." + target)


def _count_by_rule(model, target_modules, r, rule=_peft_rule):
    from torch import nn
    from transformers.pytorch_utils import Conv1D
    targets = [target_modules] if isinstance(target_modules, str) else list(target_modules)
    total = 0
    for name, module in model.named_modules():
        if not isinstance(module, (nn.Linear, Conv1D)):
            continue
        if any(rule(name, t) for t in targets):
            d_in, d_out = module.weight.shape if isinstance(module, Conv1D) else module.weight.shape[::-1]
            total += r * (d_in + d_out)
    return total


def _type_name(found: dict) -> str:
    return text(found, "type").rsplit(".", 1)[-1]


def _names(data, key: str) -> list:
    got = items(data, key)
    if not all(type(n) is str for n in got):
        raise Malformed(f"{key!r} is not a list of names")
    return got


def _state(model) -> dict:
    return {name: t.detach().clone() for name, t in model.state_dict().items()}


def _forward(model, ids):
    import torch
    with torch.no_grad():
        return model(input_ids=ids).logits


# ------------------------------------------------------------------------- a config the notebook reported
class _Config:
    """The notebook's LoraConfig, read from its reported fields (each decoded; absent ones are the defaults)."""

    def __init__(self, report):
        self.fields = part(report, "fields")
        if type(self.fields) is not dict or not all(type(k) is str for k in self.fields):
            raise Malformed("'fields' is not a dict of field names")
        self.values = {name: value(self.fields[name]) for name in STRUCTURE if name in self.fields}

    def get(self, name, default=None):
        return self.values.get(name, default)

    def kwargs(self) -> dict:
        """LoraConfig's arguments: the structural fields this PEFT knows, collections as PEFT takes them."""
        from peft import LoraConfig
        known = {f.name for f in dataclasses.fields(LoraConfig)}
        out = {}
        for name, got in self.values.items():
            if name in known:
                out[name] = set(got) if isinstance(got, frozenset) else got
        return out


def _config_of(report):
    """The notebook's lora_config as a _Config, or None where it is not a LoraConfig (or not defined)."""
    found = part(report, "answer")
    if flag(found, "defined") and flag(report, "is_lora_config"):
        return _Config(report)
    return None


def _same(a, b) -> bool:
    """a == b for the plain values a config holds; anything else (a tensor, say) by its repr."""
    plain = (type(None), bool, int, float, str)
    if isinstance(a, plain) and isinstance(b, plain):
        return a == b
    return repr(a) == repr(b)


def _targets_text(targets) -> str:
    if isinstance(targets, (set, frozenset, list, tuple)):
        return repr(sorted(targets, key=str))
    return repr(targets)


# ------------------------------------------------------------------------------------- lora_config
def ask_lora_config(ctx):
    return {}, {}


def judge_lora_config(data, secret):
    report = data
    defined(part(report, "answer"), "lora_config", callable_=False)
    cfg = _config_of(report)
    if cfg is None:
        fail(f"`lora_config` should be a peft.LoraConfig, but it is a {_type_name(part(report, 'answer'))}.")
    r, alpha = cfg.get("r"), cfg.get("lora_alpha")
    if _same(r, 16) and _same(alpha, 8):
        fail("r and lora_alpha are swapped: the rank is r=8 and the scale numerator lora_alpha=16 "
             "(scale = alpha/r = 2), you gave r=16, lora_alpha=8.")
    if not _same(r, 8):
        fail(f"lora_config.r should be 8 (the rank of A and B), got {r!r}.")
    if not _same(alpha, 16):
        fail(f"lora_config.lora_alpha should be 16 (so the scale alpha/r is 2), got {alpha!r}.")
    targets = cfg.get("target_modules")
    if targets is None:
        fail("lora_config has no target_modules: name GPT-2's \"c_attn\" and \"c_proj\".")
    try:
        names, trainable, total, _ = peft_applied(cfg.kwargs())
    except Exception as error:  # noqa: BLE001 - PEFT's refusal is the message
        fail(f"PEFT could not apply lora_config to GPT-2: {type(error).__name__}: {str(error)[:300]}")
    want = _reference_modules()
    if names != want:
        missing, extra = _kinds(want - names), _kinds(names - want)
        fail(f"lora_config puts LoRA on the wrong modules. Expected every c_attn and every c_proj "
             f"(attention's and the MLP's): {_kinds(want)}. Missing: {missing or 'none'}; "
             f"extra: {extra or 'none'}. You gave target_modules={_targets_text(targets)}.")
    dropout = cfg.get("lora_dropout", 0.0)
    try:
        dropout_ok = abs(float(dropout) - 0.05) <= 1e-9
    except (TypeError, ValueError):
        dropout_ok = False
    if not dropout_ok:
        fail(f"lora_config.lora_dropout should be 0.05, got {dropout!r}.")
    bias = cfg.get("bias", "none")
    if not _same(bias, "none"):
        fail(f"lora_config.bias should be \"none\" (biases stay frozen), got {bias!r}.")
    task_type = cfg.get("task_type")
    if task_type is None:
        fail("lora_config has no task_type: set task_type=TaskType.CAUSAL_LM (or \"CAUSAL_LM\"), so "
             "get_peft_model returns a model that can still generate text.")
    if not _same(task_type, "CAUSAL_LM"):
        fail(f"lora_config.task_type should be CAUSAL_LM (GPT-2 predicts the next token), got {task_type!r}.")
    if trainable != TRAINABLE or total != TOTAL_WITH_LORA:
        fail(f"applied to GPT-2, lora_config should give {TRAINABLE:,} trainable of {TOTAL_WITH_LORA:,}; "
             f"PEFT gives {trainable:,} of {total:,}.")
    return (f"lora_config: r=8, alpha=16, dropout 0.05, CAUSAL_LM, LoRA on {_kinds(names)}: "
            f"{trainable:,} trainable of {total:,} ({100 * trainable / total:.4f}%).")


# -------------------------------------------------------------------------------------- peft_model
def ask_peft_model(ctx):
    return {}, {}


def judge_peft_model(data, secret):
    found = part(data, "answer")
    defined(found, "peft_model", callable_=False)
    pm = part(data, "model")
    if not flag(pm, "is_peft_model"):
        fail(f"`peft_model` should be what peft.get_peft_model returns (a PeftModel), but it is a "
             f"{_type_name(found)}. Wrap the model: peft_model = get_peft_model(model, lora_config).")
    base_class = text(pm, "base_class")
    if base_class != "GPT2LMHeadModel":
        fail(f"peft_model should wrap GPT-2 (GPT2LMHeadModel), but it wraps a {base_class}.")
    if integer(pm, "base_params") != GPT2_PARAMS:
        fail(f"the model inside peft_model should have GPT-2's {GPT2_PARAMS:,} parameters (besides LoRA's).")

    # Judge peft_model against the student's own lora_config, so a wrong config costs only its own points.
    # Every setting counts (bias="all", say, leaves biases trainable): the expected model is exactly what
    # get_peft_model makes of the student's config.
    student_cfg = _config_of(part(data, "lora_config"))
    cfg_usable = student_cfg is not None and student_cfg.get("target_modules") is not None
    if cfg_usable:
        try:
            want_names, want_trainable, _, may_train = peft_applied(student_cfg.kwargs())
        except Exception:  # noqa: BLE001 - an unusable config is graded by its own test
            cfg_usable = False
    if not cfg_usable:
        want_names, want_trainable, _, _ = peft_applied({"r": 8, "target_modules": ["c_attn", "c_proj"]})
        may_train = peft_applied(LESSON_CONFIG)[3]
    names = {_strip(n) for n in _names(pm, "lora_modules")}
    if names != want_names:
        fail(f"peft_model carries LoRA on {_kinds(names) or 'no module'}, but lora_config targets "
             f"{_kinds(want_names)}. Wrap `model` with the lora_config defined above, not a new config.")
    active = part(pm, "active")
    if cfg_usable:
        if active is None:
            fail("peft_model has no active adapter: wrap the model with lora_config (get_peft_model(model, "
                 "lora_config)).")
        active_r, active_alpha = value(active, "r"), value(active, "lora_alpha")
        if not _same(active_r, student_cfg.get("r")) or not _same(active_alpha, student_cfg.get("lora_alpha")):
            fail(f"peft_model uses r={active_r}, lora_alpha={active_alpha}, but lora_config says "
                 f"r={student_cfg.get('r')}, lora_alpha={student_cfg.get('lora_alpha')}: wrap the model with "
                 "lora_config.")
    trainable_params = named_sizes(pm, "trainable")
    trainable = sum(size for _, size in trainable_params)
    total = integer(pm, "total")
    frozen_but_trainable = [n for n, _ in trainable_params if n not in may_train]
    if frozen_but_trainable:
        fail(f"{len(frozen_but_trainable)} of GPT-2's own tensors require gradients (e.g. "
             f"{frozen_but_trainable[0]}): {trainable:,} trainable instead of {want_trainable:,}. "
             "get_peft_model freezes the base model (all but what lora_config trains); leave it frozen.")
    if trainable != want_trainable:
        fail(f"peft_model has {trainable:,} trainable parameters; its lora_config implies {want_trainable:,}.")
    if names == _reference_modules() and want_trainable == TRAINABLE:  # the lesson's config: say the numbers
        if (trainable, total) != (TRAINABLE, TOTAL_WITH_LORA):
            fail(f"expected {TRAINABLE:,} trainable of {TOTAL_WITH_LORA:,}, got {trainable:,} of {total:,}.")
        kinds = _kinds(names)
        for kind in ("attn.c_attn", "attn.c_proj", "mlp.c_proj"):
            if kinds.get(kind) != 12:
                fail(f"expected LoRA on {kind} in all 12 blocks, found {kinds.get(kind, 0)}.")
    return (f"peft_model: GPT-2 wrapped by PEFT, LoRA on {_kinds(names)}, {trainable:,} trainable of "
            f"{total:,} ({100 * trainable / max(total, 1):.4f}%), base weights frozen.")


# -------------------------------------------------------------------------------- lora_param_count
# Targets of the hidden cases: real suffixes and full names, which PEFT matches, and decoys, which it does not but
# a rule other than PEFT's does (a substring test, a suffix without the dot, the dotted name searched anywhere).
REAL = ["c_attn", "c_proj", "c_fc", "attn.c_proj", "mlp.c_proj", "mlp.c_fc", "attn.c_attn", "lm_head"]
DECOYS = ["proj", "fc", "c_", "_attn", "ttn", "roj", "attn.c", "mlp.c", "0.attn.c_attn", "1.mlp.c_fc",
          "0.mlp.c_proj"]
LESSON_COUNTS = [(["c_attn", "c_proj"], 8, TRAINABLE), (["c_attn"], 8, 294_912),
                 (["c_attn", "attn.c_proj"], 8, ATTENTION_ONLY)]
RANDOM_COUNTS = 5
# Matching rules the notebook's text rules out, each of which the hidden cases must always get wrong: every
# draw of cases is checked against each, and drawn again until each one miscounts at least one case.
OTHER_RULES = {
    "a substring test (`target in name`)": lambda name, t: t in name,
    "a suffix test without the dot (`name.endswith(target)`)": lambda name, t: name.endswith(t),
    "the dotted target anywhere in the name": lambda name, t: name == t or ("." + t) in name,
    "a suffix test that forgets the equal name (`name.endswith('.' + target)` alone)":
        lambda name, t: name.endswith("." + t),
    "the last part of the name only": lambda name, t: name.split(".")[-1] == t,
    "equal names only": lambda name, t: name == t,
}


def _random_case(rng):
    n_head = rng.choice([2, 4])
    n_embd = n_head * rng.choice([8, 12, 16, 24])
    n_layer = rng.randint(1, 13)
    gpt2 = _small_gpt2(n_embd=n_embd, n_head=n_head, n_layer=n_layer, vocab_size=rng.randint(50, 400),
                       n_positions=64)
    full_names = [f"transformer.h.{rng.randrange(n_layer)}.{kind}"
                  for kind in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")]
    targets = rng.sample(REAL + full_names[:1], rng.randint(1, 3)) + rng.sample(DECOYS, rng.randint(1, 2))
    rng.shuffle(targets)
    return gpt2, targets, rng.choice([1, 2, 4, 8, 16])


def _rules_caught(cases) -> set:
    """The names of OTHER_RULES that miscount at least one of the cases."""
    caught, built = set(), {}
    for case in cases:
        key = json.dumps(case["gpt2"], sort_keys=True)
        if key not in built:
            built[key] = _skeleton(case["gpt2"])
        right = _count_by_rule(built[key], case["targets"], case["r"])
        for label, rule in OTHER_RULES.items():
            if label not in caught and _count_by_rule(built[key], case["targets"], case["r"], rule) != right:
                caught.add(label)
    return caught


def ask_lora_param_count(ctx):
    rng = random.Random(ctx.seed)
    lesson = [{"gpt2": None, "targets": targets, "r": r, "container": "list"} for targets, r, _ in LESSON_COUNTS]
    for _ in range(200):  # drawn again until every other rule miscounts a case: a few draws at most
        drawn = []
        for trial in range(RANDOM_COUNTS):
            gpt2, targets, r = _random_case(rng)
            drawn.append({"gpt2": gpt2, "targets": targets, "r": r,
                          "container": "set" if trial == RANDOM_COUNTS - 1 else "list"})  # any collection must do
        if _rules_caught(drawn) == set(OTHER_RULES):
            break
    else:
        raise AssertionError(f"seed {ctx.seed}: no draw of cases tells PEFT's rule from every other")
    cases = lesson + drawn
    return {"cases": cases}, {"seed": ctx.seed, "cases": cases}


def _count(got):
    """A returned count as a whole number, or None where it is none."""
    if got is None or isinstance(got, (Opaque, MetaTensor)):
        return None
    try:
        return round(float(got))
    except (TypeError, ValueError, RuntimeError, OverflowError):
        return None


def judge_lora_param_count(data, secret):
    seed, cases = secret["seed"], secret["cases"]
    got_calls = records(data, "lora_param_count", len(cases))
    if flag(data, "peft_called"):
        fail("lora_param_count asked PEFT to wrap the model (get_peft_model or one of its ways in), which the "
             "question rules out: PEFT is switched off while it runs. Visit model.named_modules() and count "
             "r * (d_in + d_out) for each linear layer that PEFT's rule matches.")
    for (targets, r, want), record in zip(LESSON_COUNTS, got_calls):
        what = f"lora_param_count(gpt2, {targets}, r={r})"
        got = call(record, what)
        if _count(got) != want:
            fail(f"{what} should be {want:,} (what PEFT trains), got {got!r}.")
    for case, record in zip(cases[len(LESSON_COUNTS):], got_calls[len(LESSON_COUNTS):]):
        gpt2, targets, r = case["gpt2"], case["targets"], case["r"]
        _, want, _, _ = peft_applied({"r": r, "target_modules": targets}, gpt2)
        assert want == _count_by_rule(_skeleton(gpt2), targets, r), "grader out of step with PEFT"
        got = call(record, f"lora_param_count(model, {targets}, r={r})")
        if _count(got) != want:
            fail(f"seed {seed}: on a GPT-2 with n_embd={gpt2['n_embd']}, n_layer={gpt2['n_layer']}, "
                 f"vocab_size={gpt2['vocab_size']}, lora_param_count(model, {targets}, r={r}) should be "
                 f"{want:,} (PEFT's count: r*(d_in+d_out) for each Linear/Conv1D whose full name equals a "
                 f"target or ends with '.' + target), got {got!r}.")
    return (f"lora_param_count matches PEFT on GPT-2 and on {RANDOM_COUNTS} random smaller GPT-2s and target "
            f"lists with decoys (seed {seed}).")


# ---------------------------------------------------------------------------- attention_only_targets
def ask_attention_only_targets(ctx):
    rng = random.Random(ctx.seed)
    n_head = rng.choice([2, 4])
    other = _small_gpt2(n_embd=16 * n_head, n_head=n_head, n_layer=rng.randint(13, 16), vocab_size=100,
                        n_positions=32)
    return {}, {"seed": ctx.seed, "other": other}


def _check_attention_only(targets, gpt2, seed=None):
    n_layer = (gpt2 or {}).get("n_layer", 12)
    where = f"on a GPT-2 with {n_layer} blocks" + (f" (seed {seed})" if seed is not None else "")
    try:
        names, trainable, _, _ = peft_applied({"r": 8, "target_modules": targets}, gpt2)
    except Exception as error:  # noqa: BLE001
        fail(f"PEFT refuses target_modules={targets!r} {where}: {type(error).__name__}: {str(error)[:200]}")
    want = {f"transformer.h.{i}.attn.{proj}" for i in range(n_layer) for proj in ("c_attn", "c_proj")}
    if names != want:
        missing, extra = _kinds(want - names), _kinds(names - want)
        hint = ""
        if any("mlp" in k for k in extra):
            hint = " \"c_proj\" alone also matches the MLP's c_proj: name the attention's one by its longer suffix."
        elif "attn.c_proj" in missing:
            hint = " Attention has two projections: c_attn (Q, K, V) and its output projection attn.c_proj."
        fail(f"target_modules={targets!r} {where} puts LoRA on {_kinds(names)}; attention-only means "
             f"exactly {_kinds(want)}. Missing: {missing or 'none'}; extra: {extra or 'none'}.{hint}")
    return trainable


def judge_attention_only_targets(data, secret):
    found = part(data, "answer")
    defined(found, "attention_only_targets", callable_=False)
    targets = value(data, "value")
    if not isinstance(targets, (str, list, tuple, frozenset)):
        fail(f"`attention_only_targets` should be a list of module names (what target_modules takes), "
             f"got a {_type_name(found)}.")
    if isinstance(targets, frozenset):
        targets = set(targets)
    trainable = _check_attention_only(targets, None)
    if trainable != ATTENTION_ONLY:
        fail(f"attention-only LoRA at r=8 should train {ATTENTION_ONLY:,} parameters, PEFT gives {trainable:,}.")
    seed, other = secret["seed"], secret["other"]
    _check_attention_only(targets, other, seed)
    return (f"attention_only_targets: LoRA on attn.c_attn and attn.c_proj of every block and nowhere else "
            f"({ATTENTION_ONLY:,} trainable at r=8), on GPT-2 and on a {other['n_layer']}-block GPT-2 (seed {seed}).")


# ----------------------------------------------------------------------------------- merge_adapter
MERGE_TARGETS = [["c_attn"], ["c_attn", "c_proj"], ["c_fc", "c_proj"], ["c_attn", "mlp.c_fc"]]


def _merge_recipe(seed) -> dict:
    """A small GPT-2 wrapped by PEFT whose A and B are random (B not zero), as if trained."""
    rng = random.Random(seed)
    n_head = rng.choice([2, 4])
    gpt2 = _small_gpt2(n_embd=n_head * rng.choice([8, 12, 16]), n_head=n_head, n_layer=rng.randint(1, 3),
                       vocab_size=rng.randint(60, 200), n_positions=32)
    r = rng.choice([1, 2, 4, 8])
    targets = rng.choice(MERGE_TARGETS)
    lora = {"r": r, "lora_alpha": rng.choice([1, 2, 8, 16, 32]), "target_modules": targets, "lora_dropout": 0.1,
            "task_type": "CAUSAL_LM"}
    return {"seed": seed, "gpt2": gpt2, "lora": lora, "init": {"match": "lora_", "std": 0.2}}


def _merge_ids(seed, vocab):
    import torch
    return torch.randint(0, vocab, (2, 12), generator=torch.Generator().manual_seed(seed + 1))


def ask_merge_adapter(ctx):
    from graders import _wire
    recipe = _merge_recipe(ctx.seed)
    ids = _merge_ids(ctx.seed, recipe["gpt2"]["vocab_size"])
    return {"recipe": recipe, "ids": _wire.encode(ids)}, {"seed": ctx.seed, "recipe": recipe}


def _lora_layers_of(model) -> list:
    from graders.ex4_peft_finetuning import lora_layers
    return lora_layers(model)


def _logits(record, what, shape):
    """Logits a forward reported: a float tensor of `shape`, or a failure naming the call."""
    import torch
    got = call(record, what)
    if not isinstance(got, torch.Tensor) or tuple(got.shape) != tuple(shape):
        fail(f"{what} should give logits of shape {tuple(shape)}, got {describe(got)}.")
    return got.double()


def judge_merge_adapter(data, secret):
    import torch
    from graders.ex4_peft_finetuning import build_lora_gpt2
    seed, recipe = secret["seed"], secret["recipe"]
    gpt2, lora = recipe["gpt2"], recipe["lora"]
    what = (f"merge_adapter(a PeftModel: GPT-2 with n_embd={gpt2['n_embd']}, n_layer={gpt2['n_layer']}, "
            f"LoRA r={lora['r']} on {lora['target_modules']}, A and B as if trained) [seed {seed}]")
    defined(part(data, "answer"), "merge_adapter")

    adapter_model = build_lora_gpt2(recipe).eval()
    base_params = sum(p.numel() for n, p in adapter_model.named_parameters() if "lora_" not in n)
    ids = _merge_ids(seed, gpt2["vocab_size"])
    with torch.no_grad(), _quiet():
        want = _forward(adapter_model, ids).double()
        with adapter_model.disable_adapter():
            base_logits = _forward(adapter_model, ids).double()
    assert (want - base_logits).abs().max().item() > 1e-3, "grader's adapter changes nothing"
    lora_before, state_before = _lora_layers_of(adapter_model), _state(adapter_model)

    call(part(data, "call"), what)
    merged = part(data, "merged")
    if flag(merged, "is_none"):
        fail(f"{what} returned None: return the merged model, the plain model that merge_and_unload() returns.")
    kind = text(merged, "type").rsplit(".", 1)[-1]
    if flag(merged, "is_peft_model"):
        fail(f"{what} returned a {kind}, PEFT's wrapper: the result should be the plain "
             "transformers model that merge_and_unload returns (merge_adapter() alone folds the weights in but "
             "keeps the wrapper and its LoRA layers).")
    if not flag(merged, "is_pretrained_model"):
        fail(f"{what} should return a plain transformers model (a PreTrainedModel such as GPT2LMHeadModel), "
             f"got {kind}.")
    left = _names(merged, "lora_layers")
    if left:
        fail(f"{what}: the returned {kind} still holds {len(left)} LoRA layer(s) (e.g. {left[0]}). "
             "get_base_model() returns the model inside the wrapper with its LoRA layers still in place; "
             "merge_and_unload() replaces them by plain layers.")
    count = integer(merged, "parameters")
    if count != base_params:
        fail(f"{what}: the merged model should have exactly the base model's {base_params:,} parameters "
             f"(LoRA's A and B folded into the weights), it has {count:,}.")

    after = part(data, "adapter_after")
    lora_after, keys_after = _names(after, "lora_layers"), set(_names(after, "keys"))
    reported = value(after, "changed")
    if type(reported) is not dict:
        raise Malformed("'changed' is not a dict of tensors")
    changed = []
    for k, t in state_before.items():
        if k not in keys_after:
            changed.append(k)
        elif k in reported:
            got = reported[k]
            if (not isinstance(got, torch.Tensor) or got.shape != t.shape
                    or not torch.allclose(got.double(), t.double(), rtol=1e-5, atol=1e-6)):
                changed.append(k)
    changed.sort()
    adapter_record = part(after, "logits")
    if type(adapter_record) is not dict:
        raise Malformed("the adapter model's forward is not a call record")
    adapter_now = None if "raised" in adapter_record else call(adapter_record, "the adapter model's forward")
    drifted = (not isinstance(adapter_now, torch.Tensor) or adapter_now.shape != want.shape
               or not (adapter_now.double() - want).abs().max().item() <= 1e-4 * max(1.0, want.abs().max().item()))
    if lora_after != lora_before or changed or keys_after != set(state_before) or drifted:
        fail(f"{what}: merge_adapter changed the PeftModel it was given "
             f"({len(lora_after)} of its {len(lora_before)} LoRA layers left"
             f"{', tensors not as they were, e.g. ' + changed[0] if changed else ''}"
             f"{', its logits no longer the adapter model' + chr(39) + 's' if drifted and not changed else ''}). "
             "merge_and_unload works in place on the model it is called on, so merge a copy "
             "(copy.deepcopy(peft_model)) and leave the adapter model as it was.")
    got = _logits(part(merged, "logits"), f"{what}: the merged model's forward", want.shape)
    gap = (got - want).abs().max().item()
    if not gap <= 1e-4 * max(1.0, want.abs().max().item()):  # a NaN is no match
        hint = ""
        if (got - base_logits).abs().max().item() < 1e-5:
            hint = (" They are the base model's logits: the adapter was dropped, not merged (unload() removes "
                    "the LoRA layers without folding them in; merge_and_unload() folds them in first).")
        fail(f"{what}: the merged model's logits on random token ids should equal the adapter model's, but "
             f"they differ by up to {gap:.3g}.{hint}")
    return (f"merge_adapter: a plain {kind} with no LoRA layers, the base's {base_params:,} "
            f"parameters, the adapter model's logits (max difference {gap:.1e}), and the adapter model left "
            f"as it was [seed {seed}].")


# ------------------------------------------------------------------------------------- train_step
TRAIN_LR = 0.5


def _tiny_recipe(seed) -> dict:
    gpt2 = _small_gpt2(n_embd=32, n_head=2, n_layer=2, vocab_size=97, n_positions=32, resid_pdrop=0.0,
                       embd_pdrop=0.0, attn_pdrop=0.0)
    lora = {"r": 4, "lora_alpha": 8, "target_modules": ["c_attn"], "lora_dropout": 0.0, "task_type": "CAUSAL_LM"}
    # B starts at zero; drawn nonzero so that A gets gradients too
    return {"seed": seed, "gpt2": gpt2, "lora": lora, "init": {"match": "lora_B", "std": 0.02}}


def _batches(seed):
    import torch
    generator = torch.Generator().manual_seed(seed + 1)
    return [torch.randint(0, 97, (3, 16), generator=generator) for _ in range(2)]


def ask_train_step(ctx):
    from graders import _wire
    request = {"recipe": _tiny_recipe(ctx.seed), "batches": [_wire.encode(b) for b in _batches(ctx.seed)],
               "lr": TRAIN_LR}
    return request, {"seed": ctx.seed}


def _reference_step(model, batch, optimizer):
    """The reference answer: one optimizer step, the loss before it."""
    optimizer.zero_grad()
    loss = model(input_ids=batch, labels=batch).loss
    loss.backward()
    optimizer.step()
    return loss.item()


def _loss(got):
    import torch
    if isinstance(got, (Opaque, MetaTensor)):
        fail(f"train_step should return the loss as a number (loss.item()), got "
             f"{got.type_name.rsplit('.', 1)[-1] if isinstance(got, Opaque) else 'Tensor'}.")
    try:
        if isinstance(got, torch.Tensor) and got.numel() != 1:
            raise ValueError
        return float(got)
    except (TypeError, ValueError, RuntimeError, OverflowError):
        fail(f"train_step should return the loss as a number (loss.item()), got {type(got).__name__}.")


def judge_train_step(data, secret):
    import torch
    from graders.ex4_peft_finetuning import build_lora_gpt2
    seed = secret["seed"]
    defined(part(data, "answer"), "train_step")
    steps = items(data, "steps")
    reference = build_lora_gpt2(_tiny_recipe(seed)).train()
    optimizer = torch.optim.SGD([p for p in reference.parameters() if p.requires_grad], lr=TRAIN_LR)
    for i, batch in enumerate(_batches(seed)):
        if i >= len(steps):
            raise Malformed(f"no record of step {i + 1}")
        record = steps[i]
        with _quiet():
            want = _reference_step(reference, batch, optimizer)
        got_value = _loss(call(record, f"train_step(model, batch, optimizer) (step {i + 1})"))
        if not abs(got_value - want) <= 1e-4 * max(1.0, abs(want)):  # a NaN is no match
            fail(f"seed {seed}, step {i + 1}: train_step returned loss {got_value:.6f}, but the model's "
                 f"next-token loss on that batch before the update is {want:.6f}. Pass labels=batch and "
                 "let the model shift them (or shift logits and targets by one yourself).")
        params = value(record, "parameters")
        if type(params) is not dict:
            raise Malformed("'parameters' is not a dict of tensors")
        for name, p_r in reference.named_parameters():
            p_s = params.get(name)
            if not isinstance(p_s, torch.Tensor) or p_s.shape != p_r.shape:
                fail(f"seed {seed}, after step {i + 1}: the model no longer has its parameter {name} as it was "
                     f"built (got {describe(p_s)}): train_step should only train it.")
            p_s, p_r = p_s.double(), p_r.detach().double()
            if not torch.allclose(p_s, p_r, atol=1e-5, rtol=1e-4):
                if "lora_" not in name:
                    fail(f"train_step changed the frozen weight {name}: only LoRA's A and B may change.")
                hint = (" Gradients add up across steps unless you call optimizer.zero_grad() every step."
                        if i == 1 else " One step is: zero the gradients, loss.backward(), optimizer.step().")
                fail(f"seed {seed}, after step {i + 1}: {name} differs from one correct optimizer step "
                     f"(max difference {(p_s - p_r).abs().max().item():.2e}).{hint}")
    return f"train_step: right loss, one clean optimizer step each call, frozen weights untouched (seed {seed})."
