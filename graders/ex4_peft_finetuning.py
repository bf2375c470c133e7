"""Hidden checks for Exercise 4 (LoRA finetuning with PEFT).

Every check builds what it compares against itself: GPT-2 skeletons on the `meta` device (the real
architecture, no memory, no download) wrapped by the real PEFT library, so the expected numbers are
PEFT's own and no answer depends on another one being right."""
import contextlib
import copy
import functools
import random
import warnings

import torch
from torch import nn

from graders._core import call, fail, fresh_seed, lookup, passed, seeded

GPT2_PARAMS = 124_439_808
TRAINABLE = 811_008  # r=8 on every c_attn, attn.c_proj and mlp.c_proj
TOTAL_WITH_LORA = 125_250_816
ATTENTION_ONLY = 442_368  # r=8 on c_attn and attn.c_proj only
PREFIX = "base_model.model."


# ----------------------------------------------------------------------------------------- helpers
def _gpt2_config(**overrides):
    from transformers import GPT2Config
    small = {"bos_token_id": 0, "eos_token_id": 0} if "vocab_size" in overrides else {}
    return GPT2Config(**{**small, **overrides})


def _skeleton(config=None):
    """GPT-2 (or a smaller sibling) on the meta device: shapes without memory."""
    from transformers import GPT2LMHeadModel
    with torch.device("meta"):
        return GPT2LMHeadModel(config or _gpt2_config())


@contextlib.contextmanager
def _quiet():
    """PEFT warns that GPT-2's Conv1D layers need fan_in_fan_out; it sets that itself."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _lora_modules(peft_model) -> set:
    """Names (relative to the GPT-2 inside) of the modules that carry a LoRA adapter."""
    names = set()
    for name, _ in peft_model.named_modules():
        if name.endswith(".lora_A"):
            name = name[: -len(".lora_A")]
            names.add(name[len(PREFIX):] if name.startswith(PREFIX) else name)
    return names


def _wrapped_skeleton(lora_config=None, gpt2_config=None, target_modules=None, r=8):
    from peft import LoraConfig, get_peft_model
    cfg = copy.deepcopy(lora_config) if lora_config is not None else LoraConfig(r=r, target_modules=target_modules)
    with _quiet():
        return get_peft_model(_skeleton(gpt2_config), cfg)


def peft_applied(lora_config=None, gpt2_config=None, target_modules=None, r=8):
    """What the real PEFT does with a config on a GPT-2 skeleton: (LoRA module names, trainable, total)."""
    wrapped = _wrapped_skeleton(lora_config, gpt2_config, target_modules, r)
    trainable, total = wrapped.get_nb_trainable_parameters()
    return _lora_modules(wrapped), trainable, total


def peft_trainable_names(lora_config) -> set:
    """The names of the parameters that get_peft_model leaves trainable for this config (LoRA's A and B,
    and the biases when the config's `bias` asks for them)."""
    return {n for n, p in _wrapped_skeleton(lora_config).named_parameters() if p.requires_grad}


def _kinds(names) -> dict:
    """{'attn.c_attn': 12, 'mlp.c_proj': 12, ...}: module names grouped by what follows the block index."""
    out = {}
    for name in names:
        parts = name.split(".")
        kind = ".".join(parts[3:]) if len(parts) > 3 and parts[1] == "h" else name
        out[kind] = out.get(kind, 0) + 1
    return dict(sorted(out.items()))


def reference_lora_param_count(model, target_modules, r):
    from transformers.pytorch_utils import Conv1D
    targets = [target_modules] if isinstance(target_modules, str) else list(target_modules)
    total = 0
    for name, module in model.named_modules():
        if not isinstance(module, (nn.Linear, Conv1D)):
            continue
        if any(name == t or name.endswith("." + t) for t in targets):
            d_in, d_out = module.weight.shape if isinstance(module, Conv1D) else module.weight.shape[::-1]
            total += r * (d_in + d_out)
    return total


@functools.cache  # cached here, not in a module global: the tamper check holds grader constants still
def _reference_modules():
    return peft_applied(target_modules=["c_attn", "c_proj"])[0]


def _lesson_config():
    from peft import LoraConfig
    return LoraConfig(r=8, lora_alpha=16, target_modules=["c_attn", "c_proj"], lora_dropout=0.05, bias="none",
                      task_type="CAUSAL_LM")


def _is_lora_config(obj) -> bool:
    from peft import LoraConfig
    return isinstance(obj, LoraConfig)


# ------------------------------------------------------------------------------------- lora_config
def check_lora_config(ns):
    cfg = lookup(ns, "lora_config", callable_=False)
    if not _is_lora_config(cfg):
        fail(f"`lora_config` should be a peft.LoraConfig, but it is a {type(cfg).__name__}.")
    if cfg.r == 16 and cfg.lora_alpha == 8:
        fail("r and lora_alpha are swapped: the rank is r=8 and the scale numerator lora_alpha=16 "
             "(scale = alpha/r = 2), you gave r=16, lora_alpha=8.")
    if cfg.r != 8:
        fail(f"lora_config.r should be 8 (the rank of A and B), got {cfg.r!r}.")
    if cfg.lora_alpha != 16:
        fail(f"lora_config.lora_alpha should be 16 (so the scale alpha/r is 2), got {cfg.lora_alpha!r}.")
    if cfg.target_modules is None:
        fail("lora_config has no target_modules: name GPT-2's \"c_attn\" and \"c_proj\".")
    try:
        names, trainable, total = peft_applied(cfg)
    except Exception as error:  # noqa: BLE001
        fail(f"PEFT could not apply lora_config to GPT-2: {type(error).__name__}: {error}")
    want = _reference_modules()
    if names != want:
        missing, extra = _kinds(want - names), _kinds(names - want)
        fail(f"lora_config puts LoRA on the wrong modules. Expected every c_attn and every c_proj "
             f"(attention's and the MLP's): {_kinds(want)}. Missing: {missing or 'none'}; "
             f"extra: {extra or 'none'}. You gave target_modules={sorted(cfg.target_modules) if not isinstance(cfg.target_modules, str) else cfg.target_modules!r}.")
    if abs(float(cfg.lora_dropout) - 0.05) > 1e-9:
        fail(f"lora_config.lora_dropout should be 0.05, got {cfg.lora_dropout!r}.")
    if cfg.bias != "none":
        fail(f"lora_config.bias should be \"none\" (biases stay frozen), got {cfg.bias!r}.")
    if cfg.task_type is None:
        fail("lora_config has no task_type: set task_type=TaskType.CAUSAL_LM (or \"CAUSAL_LM\"), so "
             "get_peft_model returns a model that can still generate text.")
    if cfg.task_type != "CAUSAL_LM":
        fail(f"lora_config.task_type should be CAUSAL_LM (GPT-2 predicts the next token), got {cfg.task_type!r}.")
    if trainable != TRAINABLE or total != TOTAL_WITH_LORA:
        fail(f"applied to GPT-2, lora_config should give {TRAINABLE:,} trainable of {TOTAL_WITH_LORA:,}; "
             f"PEFT gives {trainable:,} of {total:,}.")
    passed(f"lora_config: r=8, alpha=16, dropout 0.05, CAUSAL_LM, LoRA on {_kinds(names)}: "
           f"{trainable:,} trainable of {total:,} ({100 * trainable / total:.4f}%).")


# -------------------------------------------------------------------------------------- peft_model
def check_peft_model(ns):
    from peft import PeftModel
    pm = lookup(ns, "peft_model", callable_=False)
    if not isinstance(pm, PeftModel):
        fail(f"`peft_model` should be what peft.get_peft_model returns (a PeftModel), but it is a "
             f"{type(pm).__name__}. Wrap the model: peft_model = get_peft_model(model, lora_config).")
    base = pm.get_base_model()
    if type(base).__name__ != "GPT2LMHeadModel":
        fail(f"peft_model should wrap GPT-2 (GPT2LMHeadModel), but it wraps a {type(base).__name__}.")
    if sum(p.numel() for n, p in base.named_parameters() if "lora_" not in n) != GPT2_PARAMS:
        fail(f"the model inside peft_model should have GPT-2's {GPT2_PARAMS:,} parameters (besides LoRA's).")

    # Judge peft_model against the student's own lora_config, so a wrong config costs only its own points.
    # Every setting counts (bias="all", say, leaves biases trainable): the expected model is exactly what
    # get_peft_model makes of the student's config.
    student_cfg = ns.get("lora_config")
    cfg_usable = _is_lora_config(student_cfg) and student_cfg.target_modules is not None
    if cfg_usable:
        try:
            want_names, want_trainable, _ = peft_applied(student_cfg)
            may_train = peft_trainable_names(student_cfg)
        except Exception:  # noqa: BLE001 - an unusable config is graded by its own test
            cfg_usable = False
    if not cfg_usable:
        want_names, want_trainable, _ = peft_applied(target_modules=["c_attn", "c_proj"])
        may_train = peft_trainable_names(_lesson_config())
    names = _lora_modules(pm)
    if names != want_names:
        fail(f"peft_model carries LoRA on {_kinds(names) or 'no module'}, but lora_config targets "
             f"{_kinds(want_names)}. Wrap `model` with the lora_config defined above, not a new config.")
    active = pm.peft_config.get(pm.active_adapter)
    if cfg_usable and (active.r != student_cfg.r or active.lora_alpha != student_cfg.lora_alpha):
        fail(f"peft_model uses r={active.r}, lora_alpha={active.lora_alpha}, but lora_config says "
             f"r={student_cfg.r}, lora_alpha={student_cfg.lora_alpha}: wrap the model with lora_config.")
    trainable = sum(p.numel() for p in pm.parameters() if p.requires_grad)
    total = sum(p.numel() for p in pm.parameters())
    frozen_but_trainable = [n for n, p in pm.named_parameters() if p.requires_grad and n not in may_train]
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
    passed(f"peft_model: GPT-2 wrapped by PEFT, LoRA on {_kinds(names)}, {trainable:,} trainable of "
           f"{total:,} ({100 * trainable / total:.4f}%), base weights frozen.")


# -------------------------------------------------------------------------------- lora_param_count
DECOYS = ["proj", "fc", "c_"]  # substrings of real names that PEFT's rule does NOT match
REAL = ["c_attn", "c_proj", "c_fc", "attn.c_proj", "mlp.c_proj", "mlp.c_fc", "attn.c_attn", "lm_head", "h.0.attn.c_attn"]


def _random_case(rng, with_decoy):
    n_head = rng.choice([2, 4])
    n_embd = n_head * rng.choice([8, 12, 16, 24])
    gpt2_config = _gpt2_config(n_embd=n_embd, n_head=n_head, n_layer=rng.randint(1, 4),
                               vocab_size=rng.randint(50, 400), n_positions=64)
    targets = rng.sample(REAL, rng.randint(1, 3))
    if with_decoy:
        targets.append(rng.choice(DECOYS))
    rng.shuffle(targets)
    return gpt2_config, targets, rng.choice([1, 2, 4, 8, 16])


def check_lora_param_count(ns):
    fn = lookup(ns, "lora_param_count")
    skeleton = _skeleton()
    for targets, r, want in [(["c_attn", "c_proj"], 8, TRAINABLE), (["c_attn"], 8, 294_912),
                             (["c_attn", "attn.c_proj"], 8, ATTENTION_ONLY)]:
        got = call(fn, skeleton, targets, r, what=f"lora_param_count(gpt2, {targets}, r={r})")
        if got is None or round(float(got)) != want:
            fail(f"lora_param_count(gpt2, {targets}, r={r}) should be {want:,} (what PEFT trains), got {got!r}.")
    seed = fresh_seed()
    rng = random.Random(seed)
    for trial in range(5):
        gpt2_config, targets, r = _random_case(rng, with_decoy=trial < 2)
        with seeded(seed + trial):
            model = _skeleton(gpt2_config)
        _, want, _ = peft_applied(gpt2_config=gpt2_config, target_modules=targets, r=r)
        assert want == reference_lora_param_count(model, targets, r), "grader out of step with PEFT"
        arg = set(targets) if trial == 4 else list(targets)  # any collection of names must do
        got = call(fn, model, arg, r, what=f"lora_param_count(model, {targets}, r={r})")
        if got is None or round(float(got)) != want:
            fail(f"seed {seed}: on a GPT-2 with n_embd={gpt2_config.n_embd}, n_layer={gpt2_config.n_layer}, "
                 f"vocab_size={gpt2_config.vocab_size}, lora_param_count(model, {targets}, r={r}) should be "
                 f"{want:,} (PEFT's count: r*(d_in+d_out) for each Linear/Conv1D whose full name equals a "
                 f"target or ends with '.' + target), got {got!r}.")
    passed("lora_param_count matches PEFT on GPT-2 and on 5 random smaller GPT-2s and target lists "
           f"(seed {seed}).")


# ---------------------------------------------------------------------------- attention_only_targets
def _check_attention_only(targets, gpt2_config, seed=None):
    where = f"on a GPT-2 with {gpt2_config.n_layer} blocks" + (f" (seed {seed})" if seed is not None else "")
    try:
        names, trainable, _ = peft_applied(gpt2_config=gpt2_config, target_modules=targets)
    except Exception as error:  # noqa: BLE001
        fail(f"PEFT refuses target_modules={targets!r} {where}: {type(error).__name__}: {str(error)[:200]}")
    want = {f"transformer.h.{i}.attn.{proj}" for i in range(gpt2_config.n_layer) for proj in ("c_attn", "c_proj")}
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


def check_attention_only_targets(ns):
    targets = lookup(ns, "attention_only_targets", callable_=False)
    if not isinstance(targets, (str, list, tuple, set, frozenset)):
        fail(f"`attention_only_targets` should be a list of module names (what target_modules takes), "
             f"got a {type(targets).__name__}.")
    trainable = _check_attention_only(targets, _gpt2_config())
    if trainable != ATTENTION_ONLY:
        fail(f"attention-only LoRA at r=8 should train {ATTENTION_ONLY:,} parameters, PEFT gives {trainable:,}.")
    seed = fresh_seed()
    rng = random.Random(seed)
    n_head = rng.choice([2, 4])
    other = _gpt2_config(n_embd=16 * n_head, n_head=n_head, n_layer=rng.randint(13, 16), vocab_size=100,
                         n_positions=32)
    _check_attention_only(targets, other, seed)
    passed(f"attention_only_targets: LoRA on attn.c_attn and attn.c_proj of every block and nowhere else "
           f"({ATTENTION_ONLY:,} trainable at r=8), on GPT-2 and on a {other.n_layer}-block GPT-2 (seed {seed}).")


# ----------------------------------------------------------------------------------- merge_adapter
MERGE_TARGETS = [["c_attn"], ["c_attn", "c_proj"], ["c_fc", "c_proj"], ["c_attn", "mlp.c_fc"]]


def _trained_looking_adapter(seed):
    """A small GPT-2 wrapped by PEFT whose A and B are random (B not zero), as if trained; also what it
    holds without LoRA (its parameter count) and a description for messages."""
    from peft import LoraConfig, get_peft_model
    from transformers import GPT2LMHeadModel
    rng = random.Random(seed)
    n_head = rng.choice([2, 4])
    gpt2_config = _gpt2_config(n_embd=n_head * rng.choice([8, 12, 16]), n_head=n_head, n_layer=rng.randint(1, 3),
                               vocab_size=rng.randint(60, 200), n_positions=32)
    r = rng.choice([1, 2, 4, 8])
    targets = rng.choice(MERGE_TARGETS)
    lora = LoraConfig(r=r, lora_alpha=rng.choice([1, 2, 8, 16, 32]), target_modules=targets, lora_dropout=0.1,
                      task_type="CAUSAL_LM")
    with seeded(seed):
        base = GPT2LMHeadModel(gpt2_config)
        base_params = sum(p.numel() for p in base.parameters())
        with _quiet():
            model = get_peft_model(base, lora)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_" in name:
                    p.normal_(std=0.2)
    what = (f"merge_adapter(a PeftModel: GPT-2 with n_embd={gpt2_config.n_embd}, n_layer={gpt2_config.n_layer}, "
            f"LoRA r={r} on {targets}, A and B as if trained) [seed {seed}]")
    return model.eval(), base_params, gpt2_config.vocab_size, what


def _state(model) -> dict:
    return {name: t.detach().clone() for name, t in model.state_dict().items()}


def _lora_layers(model) -> list:
    return [name for name, m in model.named_modules() if hasattr(m, "lora_A")]


def check_merge_adapter(ns):
    from peft import PeftModel
    from transformers import PreTrainedModel
    fn = lookup(ns, "merge_adapter")
    seed = fresh_seed()
    adapter_model, base_params, vocab, what = _trained_looking_adapter(seed)
    with seeded(seed + 1):
        ids = torch.randint(0, vocab, (2, 12))
    with torch.no_grad():
        want = adapter_model(input_ids=ids).logits
        with adapter_model.disable_adapter():
            base_logits = adapter_model(input_ids=ids).logits
    assert (want - base_logits).abs().max().item() > 1e-3, "grader's adapter changes nothing"
    lora_before, state_before = _lora_layers(adapter_model), _state(adapter_model)

    merged = call(fn, adapter_model, what=what)
    if merged is None:
        fail(f"{what} returned None: return the merged model, the plain model that merge_and_unload() returns.")
    if isinstance(merged, PeftModel):
        fail(f"{what} returned a {type(merged).__name__}, PEFT's wrapper: the result should be the plain "
             "transformers model that merge_and_unload returns (merge_adapter() alone folds the weights in but "
             "keeps the wrapper and its LoRA layers).")
    if not isinstance(merged, PreTrainedModel):
        fail(f"{what} should return a plain transformers model (a PreTrainedModel such as GPT2LMHeadModel), "
             f"got {type(merged).__name__}.")
    left = _lora_layers(merged)
    if left:
        fail(f"{what}: the returned {type(merged).__name__} still holds {len(left)} LoRA layer(s) (e.g. {left[0]}). "
             "get_base_model() returns the model inside the wrapper with its LoRA layers still in place; "
             "merge_and_unload() replaces them by plain layers.")
    count = sum(p.numel() for p in merged.parameters())
    if count != base_params:
        fail(f"{what}: the merged model should have exactly the base model's {base_params:,} parameters "
             f"(LoRA's A and B folded into the weights), it has {count:,}.")
    lora_after, state_after = _lora_layers(adapter_model), _state(adapter_model)
    changed = sorted(k for k in state_before if k not in state_after
                     or state_after[k].shape != state_before[k].shape
                     or not torch.allclose(state_after[k], state_before[k], rtol=1e-5, atol=1e-6))
    if lora_after != lora_before or changed or set(state_after) != set(state_before):
        fail(f"{what}: merge_adapter changed the PeftModel it was given "
             f"({len(lora_after)} of its {len(lora_before)} LoRA layers left"
             f"{', tensors not as they were, e.g. ' + changed[0] if changed else ''}). merge_and_unload works in place on "
             "the model it is called on, so merge a copy (copy.deepcopy(peft_model)) and leave the adapter model "
             "as it was.")
    merged.eval()  # dropout off: the adapter model's logits above were taken in eval mode too
    with torch.no_grad():
        got = call(merged, input_ids=ids, what=f"{what}: the merged model's forward").logits
    gap = (got - want).abs().max().item()
    if gap > 1e-4 * max(1.0, want.abs().max().item()):
        hint = ""
        if (got - base_logits).abs().max().item() < 1e-5:
            hint = (" They are the base model's logits: the adapter was dropped, not merged (unload() removes "
                    "the LoRA layers without folding them in; merge_and_unload() folds them in first).")
        fail(f"{what}: the merged model's logits on random token ids should equal the adapter model's, but "
             f"they differ by up to {gap:.3g}.{hint}")
    passed(f"merge_adapter: a plain {type(merged).__name__} with no LoRA layers, the base's {base_params:,} "
           f"parameters, the adapter model's logits (max difference {gap:.1e}), and the adapter model left "
           f"as it was [seed {seed}].")


# ------------------------------------------------------------------------------------- train_step
def _tiny_lora_model(seed):
    from peft import LoraConfig, get_peft_model
    from transformers import GPT2LMHeadModel
    cfg = _gpt2_config(n_embd=32, n_head=2, n_layer=2, vocab_size=97, n_positions=32,
                       resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    with seeded(seed):
        model = GPT2LMHeadModel(cfg)
        with _quiet():
            model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"],
                                                     lora_dropout=0.0, task_type="CAUSAL_LM"))
        for name, p in model.named_parameters():  # B starts at zero; make it nonzero so A gets gradients too
            if "lora_B" in name:
                nn.init.normal_(p, std=0.02)
    return model


def _reference_step(model, batch, optimizer):
    optimizer.zero_grad()
    loss = model(input_ids=batch, labels=batch).loss
    loss.backward()
    optimizer.step()
    return loss.item()


def check_train_step(ns):
    fn = lookup(ns, "train_step")
    seed = fresh_seed()
    student = _tiny_lora_model(seed)
    reference = copy.deepcopy(student)
    with seeded(seed + 1):
        batches = [torch.randint(0, 97, (3, 16)) for _ in range(2)]

    def sgd(m):
        return torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.5)

    opt_s, opt_r = sgd(student), sgd(reference)
    student.train(), reference.train()
    for i, batch in enumerate(batches):
        want = _reference_step(reference, batch, opt_r)
        got = call(fn, student, batch.clone(), opt_s, what=f"train_step(model, batch, optimizer) (step {i + 1})")
        try:
            got_value = float(got)
        except (TypeError, ValueError):
            fail(f"train_step should return the loss as a number (loss.item()), got {type(got).__name__}.")
        if abs(got_value - want) > 1e-4 * max(1.0, abs(want)):
            fail(f"seed {seed}, step {i + 1}: train_step returned loss {got_value:.6f}, but the model's "
                 f"next-token loss on that batch before the update is {want:.6f}. Pass labels=batch and "
                 "let the model shift them (or shift logits and targets by one yourself).")
        for (name, p_s), (_, p_r) in zip(student.named_parameters(), reference.named_parameters()):
            if not torch.allclose(p_s, p_r, atol=1e-5, rtol=1e-4):
                if "lora_" not in name:
                    fail(f"train_step changed the frozen weight {name}: only LoRA's A and B may change.")
                hint = (" Gradients add up across steps unless you call optimizer.zero_grad() every step."
                        if i == 1 else " One step is: zero the gradients, loss.backward(), optimizer.step().")
                fail(f"seed {seed}, after step {i + 1}: {name} differs from one correct optimizer step "
                     f"(max difference {(p_s - p_r).abs().max().item():.2e}).{hint}")
    passed(f"train_step: right loss, one clean optimizer step each call, frozen weights untouched (seed {seed}).")
