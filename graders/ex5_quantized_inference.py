"""Exercise 5's checks, the collector's half: each builds the inputs the judge describes (configs, random
small GPT-2 checkpoints loaded through the libraries' public API, stand-ins for an answer's helpers), calls
the student's names on them and hands back what came out: numbers, and models described as plain data
(which layer is of which kind, each parameter's dtype, shape and flags). judges/ex5_quantized_inference.py
draws the inputs and decides; nothing here knows what is right.

bitsandbytes quantizes on the CPU too, so everything but GPU memory is collected on any machine; the
`test_cuda_` checks are refused by the judge before anything is collected on a machine without CUDA."""
import contextlib
import functools
import json
import logging
import math
import os
import tempfile
import warnings

from graders._collect import answer, attempt, check, lookup, seeded, standing_in

BNB_KINDS = ("Linear8bitLt", "Linear4bit")


# ------------------------------------------------------------------------------------------- quiet
@contextlib.contextmanager
def _quiet(ignore_warnings: bool = True):
    """No progress bars and no library chatter while fixtures load (warnings of the student's own calls are
    still recorded by graders._collect.attempt, which sets its own filter inside this one)."""
    from transformers.utils import logging as hf_logging
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    bnb_logger = logging.getLogger("bitsandbytes")
    bnb_level = bnb_logger.level
    bnb_logger.setLevel(logging.ERROR)
    with warnings.catch_warnings():
        if ignore_warnings:
            warnings.simplefilter("ignore")
        try:
            yield
        finally:
            hf_logging.set_verbosity(level)
            bnb_logger.setLevel(bnb_level)


# ------------------------------------------------------------------------------------------- inputs
def _dtype(name):
    import torch
    found = getattr(torch, str(name), None)
    if not isinstance(found, torch.dtype):
        raise ValueError(f"no torch dtype {name!r}")
    return found


def bnb_config(spec):
    """The BitsAndBytesConfig the judge describes as keywords (a dtype by its name); None for None."""
    if spec is None:
        return None
    from transformers import BitsAndBytesConfig
    kwargs = dict(spec)
    if "bnb_4bit_compute_dtype" in kwargs:
        kwargs["bnb_4bit_compute_dtype"] = _dtype(kwargs["bnb_4bit_compute_dtype"])
    return BitsAndBytesConfig(**kwargs)


@functools.cache
def _checkpoints() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="ex5-grader-")  # removed when the kernel ends, not left in /tmp


def gpt2_config(spec: dict):
    """The GPT2Config the judge describes: {"n_embd", "n_head", "n_layer", "vocab_size", and optionally
    "n_positions" (64), "n_inner" (None: 4 x n_embd), "tie_word_embeddings" (True, GPT-2's)}."""
    from transformers import GPT2Config
    return GPT2Config(n_embd=spec["n_embd"], n_head=spec["n_head"], n_layer=spec["n_layer"],
                      vocab_size=spec["vocab_size"], n_positions=spec.get("n_positions", 64),
                      n_inner=spec.get("n_inner"), tie_word_embeddings=spec.get("tie_word_embeddings", True),
                      bos_token_id=0, eos_token_id=0)


@functools.cache
def _saved(key: str) -> str:
    from transformers import GPT2LMHeadModel
    spec = json.loads(key)
    path = os.path.join(_checkpoints().name, f"gpt2-{abs(hash(key)) % 10**12}")
    with seeded(spec["seed"]), _quiet():
        GPT2LMHeadModel(gpt2_config(spec)).save_pretrained(path)
    return path


def small_checkpoint(spec: dict) -> str:
    """A random small GPT-2 of the judge's shape, weights drawn from its seed, saved to disk (so it loads, and
    quantizes, like the real one). spec: gpt2_config's, plus "seed"."""
    return _saved(json.dumps(spec, sort_keys=True))


def load_fixture(checkpoint, config_spec):
    """A small checkpoint (or GPT-2 itself, for None) loaded with the judge's config; transformers places a
    quantized model where bitsandbytes computes (GPU 0 where there is one)."""
    from transformers import AutoModelForCausalLM
    from utils.models import gpt2_source
    source = gpt2_source() if checkpoint is None else small_checkpoint(checkpoint)
    with _quiet():
        return AutoModelForCausalLM.from_pretrained(source, quantization_config=bnb_config(config_spec))


def _free(always: bool = False) -> None:
    """Give back GPU memory (a full garbage collection, half a second where torch is loaded): where there is a
    GPU, or `always` (after a full-size GPT-2); a small fixture on a CPU goes with its last reference."""
    import torch
    if always or torch.cuda.is_available():
        from utils.memory import free_cuda_memory
        free_cuda_memory()


@contextlib.contextmanager
def _ballast(num_bytes: int):
    """GPU memory already in use before the student's call, as in a real notebook."""
    import torch
    block = torch.empty(int(num_bytes), dtype=torch.uint8, device="cuda")
    try:
        yield
    finally:
        del block
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------------------- describing
def _text(value):
    """A name or enum as plain text (a str-valued enum by its value)."""
    if value is None:
        return None
    value = getattr(value, "value", value)
    return str.__str__(value) if isinstance(value, str) else repr(value)[:200]


def _finite(value):
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def describe_config(cfg) -> dict:
    """A config's fields as plain data (dtypes by name), and whether it is a BitsAndBytesConfig at all."""
    from transformers import BitsAndBytesConfig
    out = {"is_bnb_config": isinstance(cfg, BitsAndBytesConfig), "type": type(cfg).__name__}
    if not out["is_bnb_config"]:
        return out
    skipped = getattr(cfg, "llm_int8_skip_modules", None)
    compute = getattr(cfg, "bnb_4bit_compute_dtype", None)
    out.update(load_in_8bit=bool(getattr(cfg, "load_in_8bit", False)),
               load_in_4bit=bool(getattr(cfg, "load_in_4bit", False)),
               quant_type=_text(getattr(cfg, "bnb_4bit_quant_type", None)),
               compute_dtype=None if compute is None else str(compute).replace("torch.", ""),
               double_quant=bool(getattr(cfg, "bnb_4bit_use_double_quant", False)),
               skip_modules=None if skipped is None else
               [_text(s) for s in skipped] if isinstance(skipped, (list, tuple)) else _text(skipped))
    return out


def _module(m, torch, bnb, conv1d) -> dict:
    """One layer of interest as data: its kind, a bitsandbytes layer's quantization, LoRA's settings on it."""
    kind = ("Linear8bitLt" if isinstance(m, bnb.nn.Linear8bitLt) else "Linear4bit" if isinstance(m, bnb.nn.Linear4bit)
            else "Linear" if isinstance(m, torch.nn.Linear) else "Conv1D" if isinstance(m, conv1d) else None)
    ranks = getattr(m, "r", None)
    lora = hasattr(m, "lora_A") and isinstance(ranks, dict) and "default" in ranks
    if kind is None and not lora:
        return None
    out = {"kind": kind or "other", "class": type(m).__name__}
    if kind in BNB_KINDS:
        out.update(in_features=int(m.in_features), out_features=int(m.out_features))
    if kind == "Linear4bit":
        weight = m.weight
        out.update(quant_type=_text(getattr(weight, "quant_type", None)),
                   nested=bool(getattr(getattr(weight, "quant_state", None), "nested", False)),
                   compute_dtype=None if getattr(m, "compute_dtype", None) is None
                   else str(m.compute_dtype).replace("torch.", ""))
    if lora:
        dropout = m.lora_dropout["default"]
        out["lora"] = {"r": int(ranks["default"]), "scaling": _finite(m.scaling["default"]),
                       "dropout": _finite(getattr(dropout, "p", 0.0))}
    return out


def describe_model(model, training: bool = False) -> dict:
    """A model as plain data: its layers of interest (name -> kind, quantization, LoRA), every parameter
    [name, dtype, shape, numel, requires_grad, device type, is floating point], lm_head's kind, the number of
    blocks; with `training`, also PEFT's task type, gradient checkpointing and whether the input embeddings'
    output requires grad."""
    import torch
    out = {"type": type(model).__name__}
    if not isinstance(model, torch.nn.Module):
        out.update(is_module=False, has_named_modules=hasattr(model, "named_modules"))
        return out
    import bitsandbytes as bnb
    from peft import PeftModel
    from transformers.pytorch_utils import Conv1D
    modules = {}
    for name, m in model.named_modules():
        described = _module(m, torch, bnb, Conv1D)
        if described is not None:
            modules[name] = described
    parameters = [[name, str(p.dtype).replace("torch.", ""), list(p.shape), int(p.numel()), bool(p.requires_grad),
                   p.device.type, bool(p.dtype.is_floating_point)] for name, p in model.named_parameters()]
    head = getattr(model, "lm_head", None)
    head_kind = _module(head, torch, bnb, Conv1D) if isinstance(head, torch.nn.Module) else None
    n_layer = getattr(getattr(model, "config", None), "n_layer", None)
    out.update(is_module=True, is_peft=isinstance(model, PeftModel), modules=modules, parameters=parameters,
               lm_head=None if head_kind is None else head_kind["kind"],
               n_layer=n_layer if type(n_layer) is int else None)
    if training:
        out.update(_training_state(model, torch, PeftModel))
    return out


def _training_state(model, torch, peft_model) -> dict:
    out = {"task_type": None, "gradient_checkpointing": False, "embeddings_output_requires_grad": None}
    if isinstance(model, peft_model):
        config = getattr(model, "peft_config", {}).get("default")
        out["task_type"] = _text(getattr(config, "task_type", None))
        base = model.get_base_model()
    else:
        base = model
    # transformers 5.23 renames it is_activation_checkpointing (the floor, 5.2, does not)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out["gradient_checkpointing"] = bool(getattr(base, "is_gradient_checkpointing", False))
    try:
        embed = model.get_input_embeddings()
        with torch.enable_grad():
            said = embed(torch.zeros(1, 1, dtype=torch.long, device=embed.weight.device))
        out["embeddings_output_requires_grad"] = bool(said.requires_grad)
    except Exception as error:  # noqa: BLE001 - the judge words it
        out["embeddings_error"] = f"{type(error).__name__}: {str(error)[:300]}"
    return out


def _keep(fn, *args, **kwargs):
    """graders._collect.attempt, keeping what came back as an object: (record without its value, result)."""
    kept = []

    def run():
        kept.append(fn(*args, **kwargs))

    record = attempt(run)
    record.pop("value", None)
    return record, (kept[0] if kept else None)


def _model_call(fn, *args, training=False, **kwargs) -> dict:
    """Call a function that returns a model: the record says what it raised, or describes what it returned."""
    with _quiet(ignore_warnings=False):
        record, model = _keep(fn, *args, **kwargs)
    if "raised" not in record:
        record["value"] = None
        try:
            record["model"] = describe_model(model, training)
        except Exception as error:  # noqa: BLE001 - a returned object that breaks describing: the judge says so
            record["describe_error"] = f"{type(error).__name__}: {str(error)[:300]}"
    del model
    _free(always=True)
    return record


# ------------------------------------------------------------------------------------------- configs
def _config(ns, request):
    found = lookup(ns, request["answer"])
    data = {"answer": found}
    if found["defined"]:
        data["config"] = describe_config(ns[request["answer"]])
    return data


def check_config_8bit(ns):
    check("ex5_quantized_inference", "config_8bit", ns, _config)


def check_config_4bit(ns):
    check("ex5_quantized_inference", "config_4bit", ns, _config)


# ------------------------------------------------------------------------------------ load_quantized
def _load_quantized(ns, request, int8_model=None):
    data, fn = answer(ns, "load_quantized")
    if fn is None:
        return data
    cases = []
    for case in request["cases"]:
        if case.get("handed") and int8_model is not None:  # the test cell's own 8-bit load, described in full
            cases.append({"handed": True, "value": None, "model": describe_model(int8_model)})
            continue
        cases.append(_model_call(fn, bnb_config(case["config"])))
    data["cases"] = cases
    return data


def check_load_quantized(ns, int8_model=None):
    """`int8_model`: what the test cell's own load_quantized(8-bit config) returned, described here rather than
    loaded again (a second 8-bit load is a second or more on a CPU)."""
    check("ex5_quantized_inference", "load_quantized", ns, _load_quantized, int8_model=int8_model)


# ----------------------------------------------------------------------------- expected_weight_bytes
def _expected_weight_bytes(ns, request):
    """The student's prediction for each of the judge's (GPT2Config, BitsAndBytesConfig or None): nothing is
    loaded here, the answer computes from the configurations alone."""
    data, fn = answer(ns, "expected_weight_bytes")
    if fn is None:
        return data
    data["calls"] = [attempt(fn, gpt2_config(case["config"]), bnb_config(case["quantization"]))
                     for case in request["cases"]]
    return data


def check_expected_weight_bytes(ns):
    check("ex5_quantized_inference", "expected_weight_bytes", ns, _expected_weight_bytes)


# ------------------------------------------------------------------------------ measure_load_memory
def _gpt2_loader(configs: list):
    """A stand-in for load_quantized: GPT-2 on GPU 0 with one of this check's own configs, and no other."""
    def load_quantized(config=None):
        if not any(config is known or _same_config(config, known) for known in configs):
            raise KeyError("the grader's stand-in for load_quantized knows only this check's own configs")
        from utils.models import load_gpt2
        with _quiet():
            return load_gpt2(quantization_config=config, device_map={"": 0})
    return load_quantized


def _same_config(a, b) -> bool:
    if a is None or b is None:
        return a is b
    try:
        return type(a) is type(b) and a.to_dict() == b.to_dict()
    except Exception:  # noqa: BLE001 - a config that cannot say what it is is not one of ours
        return False


def _measure_load_memory(ns, request):
    data, fn = answer(ns, "measure_load_memory")
    if fn is None:
        return data
    configs = [bnb_config(case["config"]) for case in request["cases"]]
    calls = []
    for config in configs:
        with standing_in(ns, {"load_quantized": _gpt2_loader(configs)}), _ballast(request["ballast"]), _quiet(False):
            calls.append(attempt(fn, config))
        _free()
    data["calls"] = calls
    return data


def check_measure_load_memory(ns):
    check("ex5_quantized_inference", "measure_load_memory", ns, _measure_load_memory)


def check_measure_load_memory_fresh(ns):
    check("ex5_quantized_inference", "measure_load_memory_fresh", ns, _measure_load_memory)


# ------------------------------------------------------------------------------------------- QLoRA
def _make_qlora_model(ns, request):
    data, fn = answer(ns, "make_qlora_model")
    if fn is None:
        return data
    import torch
    data["small"] = _model_call(fn, small_checkpoint(request["checkpoint"]), training=True)
    full = ns.get("qlora_model")
    if isinstance(full, torch.nn.Module):
        data["full"] = {"value": None, "model": describe_model(full, training=True), "from_notebook": True}
    else:  # the notebook's own cell did not build it: build it here
        data["full"] = _model_call(fn, training=True)
    return data


def check_make_qlora_model(ns):
    check("ex5_quantized_inference", "make_qlora_model", ns, _make_qlora_model)


def count_fixture(spec: dict):
    """A plain torch.nn.Module of the judge's layers (spec: {"seed", "layers": [{"name", "kind", ...}]}): kinds
    "embedding" (rows, cols), "linear" (in, out, bias), "layernorm" (width), "linear4bit" (in, out, bias,
    quant_type, storage: the dtype the packed numbers are stored in), "linear8bit" (in, out, bias); each with
    "trainable" for its floating-point parameters, and "tied": the name of an embedding whose matrix a linear
    layer shares. bitsandbytes layers are quantized where the notebook computes (GPU 0 where there is one)."""
    import bitsandbytes as bnb
    import torch
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = torch.nn.Module()
    with seeded(spec["seed"]), _quiet():
        for layer in spec["layers"]:
            kind = layer["kind"]
            if kind == "embedding":
                made = torch.nn.Embedding(layer["rows"], layer["cols"])
            elif kind == "layernorm":
                made = torch.nn.LayerNorm(layer["width"])
            elif kind == "linear":
                made = torch.nn.Linear(layer["in"], layer["out"], bias=layer["bias"])
            elif kind == "linear4bit":
                made = bnb.nn.Linear4bit(layer["in"], layer["out"], bias=layer["bias"], quant_type=layer["quant_type"],
                                         compute_dtype=torch.float32, quant_storage=_dtype(layer["storage"]))
            elif kind == "linear8bit":
                made = bnb.nn.Linear8bitLt(layer["in"], layer["out"], bias=layer["bias"], has_fp16_weights=False)
            else:
                raise ValueError(f"no layer kind {kind!r}")
            if layer.get("tied"):
                made.weight = getattr(model, layer["tied"]).weight
            model.add_module(layer["name"], made)
        model = model.to(device)  # bitsandbytes quantizes its layers as they move
        for layer in spec["layers"]:  # bitsandbytes' weights stay frozen (a tied weight is its embedding's)
            made = getattr(model, layer["name"])
            for name, p in made.named_parameters(recurse=False):
                if not (name == "weight" and (layer.get("tied") or layer["kind"] in ("linear4bit", "linear8bit"))):
                    p.requires_grad_(layer["trainable"])
                elif layer["kind"] in ("linear4bit", "linear8bit"):
                    p.requires_grad_(False)
    return model


def _count_parameters(ns, request):
    data, fn = answer(ns, "count_parameters")
    if fn is None:
        return data
    calls = []
    for spec in request["models"]:
        model = count_fixture(spec)
        calls.append(attempt(fn, model))
        del model
    _free()
    data["calls"] = calls
    return data


def check_count_parameters(ns):
    check("ex5_quantized_inference", "count_parameters", ns, _count_parameters)


# Stand-ins for qlora_step_peak's helpers: deterministic, and deliberately none of the lesson's answers (LoRA
# on other layers of a 4-bit GPT-2, plain SGD, a loss that is no next-token loss), so the judge measures the
# very same steps in its own process.
def step_stand_ins(spec: dict) -> dict:
    """make_qlora_model, make_optimizer and train_step as the judge describes them (spec: "quantization",
    "lora", "momentum")."""
    import torch

    def make_qlora_model(checkpoint=None):
        from peft import LoraConfig, get_peft_model
        from utils.models import load_gpt2
        with _quiet():
            model = load_gpt2(quantization_config=bnb_config(spec["quantization"]), device_map={"": 0})
            return get_peft_model(model, LoraConfig(**spec["lora"]))

    def make_optimizer(model, lr=spec["lr"]):
        return torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr, momentum=spec["momentum"])

    def train_step(model, batch, optimizer):
        model.train()
        optimizer.zero_grad()
        logits = model(input_ids=batch).logits
        loss = logits.float().square().mean()
        loss.backward()
        optimizer.step()
        return loss.item()

    return {"make_qlora_model": make_qlora_model, "make_optimizer": make_optimizer, "train_step": train_step}


def step_batch(spec: dict):
    """The judge's batch of token ids (rows x length, drawn from its seed), on the GPU."""
    import torch
    generator = torch.Generator().manual_seed(spec["seed"])
    return torch.randint(0, spec["vocab"], (spec["rows"], spec["length"]), generator=generator).to("cuda")


def _qlora_step_peak(ns, request):
    data, fn = answer(ns, "qlora_step_peak")
    if fn is None:
        return data
    calls = []
    for spec in request["batches"]:
        batch = step_batch(spec)
        with (standing_in(ns, step_stand_ins(request["stand_ins"])), _ballast(request["ballast"]),
              _quiet(ignore_warnings=False)):
            calls.append(attempt(fn, batch))
        del batch
        _free()
    data["calls"] = calls
    return data


def check_qlora_step_peak(ns):
    check("ex5_quantized_inference", "qlora_step_peak", ns, _qlora_step_peak)
