"""Hidden checks for Exercise 5 (quantized inference with bitsandbytes).

The graders load their own models with their own configs (a reference loader), so each answer is graded
on its own. bitsandbytes quantizes on the CPU too, so everything but the measured GPU memory is
CPU-gradable; the `test_cuda_` checks stop at once on a machine without CUDA."""
import contextlib
import functools
import logging
import os
import random
import tempfile
import warnings

import torch

from graders._core import call, fail, fresh_seed, lookup, passed, using_reference
from utils.device import pick_compute_dtype, require_cuda
from utils.memory import free_cuda_memory, measure_cuda_memory
from utils.models import gpt2_source

N_BLOCKS = 12  # GPT-2 small
BLOCK_LINEARS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
N_QUANTIZED = N_BLOCKS * len(BLOCK_LINEARS)  # 48: every block linear
GPU_MESSAGE = "must be graded on a GPU"


# ----------------------------------------------------------------------------------------- helpers
@contextlib.contextmanager
def _quiet():
    from transformers.utils import logging as hf_logging
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            yield
        finally:
            hf_logging.set_verbosity(level)


def _bnb():
    import bitsandbytes as bnb
    return bnb


def reference_config(kind: str, **extra):
    from transformers import BitsAndBytesConfig
    if kind == "int8":
        return BitsAndBytesConfig(load_in_8bit=True, **extra)
    quant_type = "fp4" if kind == "fp4" else "nf4"
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quant_type,
                              bnb_4bit_compute_dtype=pick_compute_dtype(), **extra)


def reference_load(config=None, source=None):
    """GPT-2 (or `source`) with `config`, on GPU 0 when there is one."""
    from transformers import AutoModelForCausalLM
    placement = {"device_map": {"": 0}} if torch.cuda.is_available() else {}
    with _quiet():
        return AutoModelForCausalLM.from_pretrained(source or gpt2_source(), quantization_config=config, **placement)


def quantized_modules(model) -> dict:
    """name -> bits for every bitsandbytes linear layer in `model`."""
    bnb = _bnb()
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, bnb.nn.Linear8bitLt):
            out[name] = 8
        elif isinstance(module, bnb.nn.Linear4bit):
            out[name] = 4
    return out


def reference_expected_weight_bytes(model) -> float:
    bnb = _bnb()
    total, skip = 0.0, set()
    for module in model.modules():
        if isinstance(module, (bnb.nn.Linear8bitLt, bnb.nn.Linear4bit)):
            per_number = 1 if isinstance(module, bnb.nn.Linear8bitLt) else 0.5
            total += module.in_features * module.out_features * per_number
            skip.add(id(module.weight))
    for tensor in list(model.parameters()) + list(model.buffers()):
        if id(tensor) not in skip:
            total += tensor.numel() * tensor.element_size()
    return total


@functools.cache
def _checkpoints() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="ex5-grader-")  # removed when the kernel ends, not left in /tmp


@functools.cache
def small_checkpoint(seed: int) -> tuple:
    """A random small GPT-2 saved to disk (so it loads, and quantizes, like the real one)."""
    from transformers import GPT2Config, GPT2LMHeadModel
    rng = random.Random(seed)
    n_head = rng.choice([2, 4])
    config = GPT2Config(n_embd=64 * rng.choice([1, 2]), n_head=n_head, n_layer=rng.randint(1, 3),
                        vocab_size=rng.randint(64, 512), n_positions=64, bos_token_id=0, eos_token_id=0)
    path = os.path.join(_checkpoints().name, str(seed))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        GPT2LMHeadModel(config).save_pretrained(path)
    return path, config


def small_models(seed: int, skip=("lm_head",)) -> dict:
    """A random small GPT-2 (seed `seed`) loaded in float32, 8-bit and NF4, `skip` left unquantized.

    Small on purpose: quantizing the real GPT-2 on a CPU takes seconds per load, and a rule that holds for
    any GPT-2 shape, with any layers left out, holds for GPT-2 itself."""
    path, config = small_checkpoint(seed)
    return {"fp32": reference_load(None, source=path),
            **{kind: reference_load(reference_config(kind, llm_int8_skip_modules=list(skip)), source=path)
               for kind in ("int8", "nf4")}}, config


def _describe(config) -> str:
    return f"n_embd={config.n_embd}, n_layer={config.n_layer}, vocab_size={config.vocab_size}"


def _is_bnb_config(obj) -> bool:
    from transformers import BitsAndBytesConfig
    return isinstance(obj, BitsAndBytesConfig)


# -------------------------------------------------------------------------------------- configs
def check_config_8bit(ns):
    cfg = lookup(ns, "config_8bit", callable_=False)
    if not _is_bnb_config(cfg):
        fail(f"`config_8bit` should be a transformers.BitsAndBytesConfig, but it is a {type(cfg).__name__}: "
             "from_pretrained takes it as quantization_config=.")
    if not cfg.load_in_8bit:
        fail("config_8bit does not switch 8-bit loading on: BitsAndBytesConfig(load_in_8bit=True).")
    if cfg.load_in_4bit:
        fail("config_8bit asks for 4-bit loading too: only load_in_8bit=True.")
    skipped = cfg.llm_int8_skip_modules or []
    if any(any(part in s for part in ("c_attn", "c_proj", "c_fc", "attn", "mlp", "h.")) for s in skipped):
        fail(f"config_8bit keeps {skipped} out of quantization: the transformer blocks' linears must be quantized.")
    passed("config_8bit: BitsAndBytesConfig(load_in_8bit=True).")


def check_config_4bit(ns):
    cfg = lookup(ns, "config_4bit", callable_=False)
    if not _is_bnb_config(cfg):
        fail(f"`config_4bit` should be a transformers.BitsAndBytesConfig, but it is a {type(cfg).__name__}.")
    if not cfg.load_in_4bit or cfg.load_in_8bit:
        fail("config_4bit should switch 4-bit loading on (load_in_4bit=True) and 8-bit off.")
    if cfg.bnb_4bit_quant_type != "nf4":
        fail(f"config_4bit uses the 4-bit type {cfg.bnb_4bit_quant_type!r}; set bnb_4bit_quant_type=\"nf4\" "
             "(NormalFloat4: its 16 levels follow the bell shape of trained weights; \"fp4\" is the default).")
    want = pick_compute_dtype()
    got = cfg.bnb_4bit_compute_dtype
    if got != want:
        machine = ("this GPU supports bfloat16" if want == torch.bfloat16 else
                   "this GPU has no bfloat16 (a T4, say)" if want == torch.float16 else "this machine has no CUDA GPU")
        fail(f"config_4bit computes in {got}, but {machine}, so the compute dtype should be {want}. Choose it on "
             "the machine that runs the notebook: bnb_4bit_compute_dtype=pick_compute_dtype().")
    passed(f"config_4bit: NF4, compute dtype {want} (right for this machine), "
           f"double quantization {'on' if cfg.bnb_4bit_use_double_quant else 'off'}.")


# ------------------------------------------------------------------------------------ load_quantized
def _check_loaded(model, label, bits, quant_type=None, kept=()):
    """`model` as load_quantized(config) must return it; `kept`: block linears the config leaves unquantized."""
    if model is None or not hasattr(model, "named_modules"):
        fail(f"load_quantized({label}) should return the loaded model, got {type(model).__name__}.")
    found = quantized_modules(model)
    if bits is None:
        if found:
            fail(f"load_quantized(None) should load plain float32 GPT-2, but {len(found)} layers are quantized.")
        dtypes = {p.dtype for p in model.parameters()}
        if dtypes != {torch.float32}:
            fail(f"load_quantized(None) should keep every weight in float32, found {sorted(map(str, dtypes))}.")
    else:
        kind = "Linear8bitLt" if bits == 8 else "Linear4bit"
        wanted = [name for name in BLOCK_LINEARS if name not in kept]
        right = sum(b == bits for b in found.values())
        if len(found) != N_BLOCKS * len(wanted) or right != len(found):
            fail(f"load_quantized({label}) should turn {N_BLOCKS * len(wanted)} of GPT-2's block linears ({wanted} in "
                 f"each of {N_BLOCKS} blocks) into bitsandbytes {kind} layers; found {right} {kind} and {len(found) - right} "
                 "others. Pass the config you are given as quantization_config=config: it says which layers stay "
                 "unquantized too.")
        names = {".".join(n.split(".")[-2:]) for n in found}
        if names != set(wanted):
            fail(f"load_quantized({label}) quantized {sorted(names)}; the config asks for {wanted}.")
        bnb = _bnb()
        if isinstance(model.lm_head, (bnb.nn.Linear8bitLt, bnb.nn.Linear4bit)):
            fail(f"load_quantized({label}) quantized lm_head; it shares its matrix with the embeddings and stays unquantized.")
        if quant_type is not None:
            types = {m.weight.quant_type for n, m in model.named_modules() if n in found}
            if types != {quant_type}:
                fail(f"load_quantized({label}) gave 4-bit type {sorted(types)}; the config asks for {quant_type!r}. "
                     "Use the config passed in, not a global one.")
    _check_device(model, f"load_quantized({label})", " (device_map={'': 0})")


def _check_device(model, what, cuda_hint):
    """Every weight of `model` on this machine's device (the GPU where there is one)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    where = {p.device.type for p in model.parameters()}
    if where != {device}:
        fail(f"{what}: weights on {sorted(where)}; on this machine they belong on {device}"
             + (f"{cuda_hint}." if device == "cuda" else "."))


def check_load_quantized(ns, int8_model=None):
    """`int8_model`: what the test cell's own load_quantized(8-bit config) returned, checked here in full rather
    than loaded again (a second 8-bit load is a second or more on a CPU)."""
    fn = lookup(ns, "load_quantized")
    # FP4 rather than the lesson's NF4, and the MLP kept out: a loader that ignores its argument cannot pass by
    # luck. (Keeping the MLP out also spares two thirds of the 4-bit rounding, seconds on a CPU.)
    mlp = tuple(name for name in BLOCK_LINEARS if name.startswith("mlp."))
    cases = [("an 8-bit config", reference_config("int8"), 8, None, ()),
             ("an FP4 config keeping the MLP unquantized",
              reference_config("fp4", llm_int8_skip_modules=["lm_head", *mlp]), 4, "fp4", mlp),
             ("None", None, None, None, ())]
    for label, cfg, bits, quant_type, kept in cases:
        if bits == 8 and int8_model is not None:
            model = int8_model
        else:
            with _quiet():
                model = call(fn, cfg, what=f"load_quantized({label})")
        _check_loaded(model, label, bits, quant_type, kept)
        del model
        free_cuda_memory()
    passed(f"load_quantized: each config's layers quantized as it asks (8-bit: all {N_QUANTIZED} block linears; "
           f"FP4 with the MLP kept out: the {N_BLOCKS * (len(BLOCK_LINEARS) - len(mlp))} attention linears, the "
           "4-bit type too), embeddings and lm_head "
           "unquantized, float32 for None, weights on the right device.")


# ----------------------------------------------------------------------------- expected_weight_bytes
def check_expected_weight_bytes(ns):
    fn = lookup(ns, "expected_weight_bytes")
    seed = fresh_seed()
    rng = random.Random(seed)
    for trial in range(3):
        # the first trial quantizes every block linear, as the notebook's config does; then other layers stay out
        skip = ["lm_head"] + (rng.sample(["c_fc", "attn.c_attn", "mlp.c_proj"], rng.randint(1, 2)) if trial else [])
        models, config = small_models(seed + trial, skip)
        for kind, model in models.items():
            want = reference_expected_weight_bytes(model)
            assert abs(want - model.get_memory_footprint()) < 1, "grader out of step with get_memory_footprint"
            got = call(fn, model, what=f"expected_weight_bytes(<small GPT-2 {kind}>)")
            try:
                got = float(got)
            except (TypeError, ValueError):
                fail(f"expected_weight_bytes should return a number of bytes, got {type(got).__name__}.")
            if abs(got - want) > 1:
                left_out = f", with {skip[1:]} left unquantized" if len(skip) > 1 and kind != "fp32" else ""
                fail(f"seed {seed}: on a small GPT-2 ({_describe(config)}) in {kind}{left_out}, expected_weight_bytes "
                     f"should be {want:,.0f} bytes (get_memory_footprint() agrees), got {got:,.0f}. Quantized linear "
                     "weights count 1 byte (8-bit) or 0.5 byte (4-bit) per number, everything else (embeddings, "
                     "layer norms, biases) its own dtype's size; which layers are quantized depends on the config, "
                     "so look at each layer's type, not its name.")
        del models
        free_cuda_memory()
    passed(f"expected_weight_bytes matches get_memory_footprint() on random small GPT-2s in float32, 8-bit and NF4, "
           f"with and without other layers left unquantized (seed {seed}).")


# --------------------------------------------------------------------------------- memory_footprints
def check_memory_footprints(ns):
    fn = lookup(ns, "memory_footprints")
    seed = fresh_seed()
    small, config = small_models(seed)
    models = {"fp32": small["fp32"], "int8": small["int8"], f"tiny-{seed}": small["nf4"]}  # a name it never saw
    label = f"memory_footprints({{{', '.join(map(repr, models))}}}: a small GPT-2, {_describe(config)})"
    got = call(fn, dict(models), what=label)
    if not isinstance(got, dict):
        fail(f"memory_footprints should return a dict (name -> bytes), got {type(got).__name__}.")
    for name, model in models.items():
        want = model.get_memory_footprint()
        if name not in got:
            fail(f"seed {seed}: {label} has no entry {name!r}: keep the names of the dict you are given.")
        if got[name] is None or abs(float(got[name]) - want) > 1:
            fail(f"seed {seed}: {label}[{name!r}] should be {want:,} bytes (model.get_memory_footprint()), got "
                 f"{got[name]!r}. Compute from the models, do not type numbers in.")
    del small, models
    free_cuda_memory()
    passed(f"memory_footprints: bytes as get_memory_footprint() reports them, for a random small GPT-2 in float32, "
           f"8-bit and NF4, under names it had not seen (seed {seed}).")


# ------------------------------------------------------------------------------ measure_load_memory
@contextlib.contextmanager
def _ballast(num_bytes=64 * 2**20):
    """Memory already in use before each call, as in a real notebook: a measurement must subtract it."""
    block = torch.empty(num_bytes, dtype=torch.uint8, device="cuda")
    try:
        yield
    finally:
        del block
        torch.cuda.empty_cache()


def _student_measures(ns, fn, config, label):
    with using_reference(ns, load_quantized=reference_load), _ballast(), _quiet():
        got = call(fn, config, what=f"measure_load_memory({label})")
    free_cuda_memory()
    try:
        return float(got)
    except (TypeError, ValueError):
        fail(f"measure_load_memory({label}) should return bytes (a number), got {type(got).__name__}.")


def _architecture_expectation(config) -> float:
    model = reference_load(config)
    want = reference_expected_weight_bytes(model)
    del model
    free_cuda_memory()
    return want


def check_measure_load_memory(ns):
    require_cuda(f"Grading measure_load_memory ({GPU_MESSAGE}): it")
    fn = lookup(ns, "measure_load_memory")
    measured, expected = {}, {}
    for name, cfg in [("fp32", None), ("int8", reference_config("int8")), ("nf4", reference_config("nf4"))]:
        expected[name] = _architecture_expectation(cfg)
        measured[name] = _student_measures(ns, fn, cfg, "None" if cfg is None else f"<{name} config>")
    for name in measured:
        low, high = 0.97 * expected[name], 1.12 * expected[name]  # NF4 adds a float32 scale per 64 weights (+3%)
        if not low <= measured[name] <= high:
            fail(f"measure_load_memory for {name} gave {measured[name] / 1e6:,.1f} MB; from the architecture the "
                 f"loaded weights take {expected[name] / 1e6:,.1f} MB (expected {low / 1e6:,.1f} to {high / 1e6:,.1f}). "
                 "Measure what the load keeps allocated on the GPU (measured.kept), relative to before the load.")
    ratio8, ratio4 = measured["int8"] / measured["fp32"], measured["nf4"] / measured["fp32"]
    if not ratio4 < ratio8 < 0.6:
        fail(f"the quantized models should sit well below float32 (8-bit about {expected['int8'] / expected['fp32']:.2f}x, "
             f"NF4 about {expected['nf4'] / expected['fp32']:.2f}x), measured {ratio8:.2f}x and {ratio4:.2f}x.")
    passed(f"measure_load_memory: fp32 {measured['fp32'] / 1e6:.1f} MB, 8-bit {measured['int8'] / 1e6:.1f} MB "
           f"({ratio8:.2f}x), NF4 {measured['nf4'] / 1e6:.1f} MB ({ratio4:.2f}x), as the architecture implies.")


def check_measure_load_memory_fresh(ns):
    require_cuda(f"Grading measure_load_memory ({GPU_MESSAGE}): it")
    fn = lookup(ns, "measure_load_memory")
    seed = fresh_seed()
    rng = random.Random(seed)
    choices = [("8-bit, c_fc left unquantized", lambda: reference_config("int8", llm_int8_skip_modules=["lm_head", "c_fc"])),
               ("FP4", lambda: reference_config("fp4")),
               ("NF4 with double quantization", lambda: reference_config("nf4", bnb_4bit_use_double_quant=True)),
               ("NF4, mlp.c_proj left unquantized", lambda: reference_config("nf4", llm_int8_skip_modules=["lm_head", "mlp.c_proj"]))]
    # float32 too: a loader that leaves it on the CPU measures 0 there, whatever it does for bitsandbytes.
    for label, make in [("float32", lambda: None)] + rng.sample(choices, 2):
        with measure_cuda_memory() as fresh:
            model = reference_load(make())
        del model
        free_cuda_memory()
        got = _student_measures(ns, fn, make(), f"<{label}>")
        if abs(got - fresh.kept) > 0.10 * fresh.kept:
            fail(f"seed {seed}: for {label} measure_load_memory gave {got / 1e6:,.1f} MB; "
                 f"the grader's own measurement of the same load is {fresh.kept / 1e6:,.1f} MB (10% tolerance).")
    passed(f"measure_load_memory agrees with fresh measurements, for float32 and two configs it never saw (seed {seed}).")


# ------------------------------------------------------------------------------------------- QLoRA
QLORA_TARGETS = ("attn.c_attn", "attn.c_proj", "mlp.c_proj")  # where ["c_attn", "c_proj"] puts LoRA in GPT-2
LEARNING_RATE = 5e-4  # Exercise 4's
PEAK_TOLERANCE = 0.10  # a student's peak may differ from the grader's own by this fraction
PEAK_BALLAST = 256 * 2**20  # memory in use before the student's measurement (a real notebook holds models)


def reference_qlora_model(source=None, r=8, target_modules=("c_attn", "c_proj")):
    """QLoRA's recipe: NF4 with double quantization, prepare_model_for_kbit_training, LoRA (Exercise 4's config)."""
    from peft import LoraConfig, TaskType, get_peft_model, prepare_model_for_kbit_training
    base = reference_load(reference_config("nf4", bnb_4bit_use_double_quant=True), source=source)
    base = prepare_model_for_kbit_training(base)
    lora = LoraConfig(r=r, lora_alpha=2 * r, target_modules=list(target_modules), lora_dropout=0.05, bias="none",
                      task_type=TaskType.CAUSAL_LM)
    with _quiet():
        return get_peft_model(base, lora)


def reference_optimizer(model, lr=LEARNING_RATE):
    """bitsandbytes' paged 8-bit AdamW on the trainable parameters (torch's AdamW where bitsandbytes lacks it)."""
    params = [p for p in model.parameters() if p.requires_grad]
    paged = getattr(_bnb().optim, "PagedAdamW8bit", None)
    with _quiet():
        return paged(params, lr=lr) if paged is not None else torch.optim.AdamW(params, lr=lr)


def reference_train_step(model, batch, optimizer):
    model.train()
    optimizer.zero_grad()
    loss = model(input_ids=batch, labels=batch).loss
    loss.backward()
    optimizer.step()
    return loss.item()


def reference_count(model) -> tuple:
    """(trainable, total) numbers in `model`'s parameters, a packed 4-bit weight counted as in x out numbers."""
    bnb = _bnb()
    numbers = {id(m.weight): m.in_features * m.out_features for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)}
    trainable = total = 0
    for p in model.parameters():
        n = numbers.get(id(p), p.numel())
        total += n
        trainable += n if p.requires_grad else 0
    return trainable, total


def _short(name: str) -> str:
    """base_model.model.transformer.h.3.attn.c_attn.base_layer -> attn.c_attn"""
    parts = [p for p in name.split(".") if p != "base_layer"]
    return ".".join(parts[-2:])


def _check_qlora(model, label: str, n_layer: int) -> None:
    """Fail with a message that teaches unless `model` is QLoRA as the lesson builds it."""
    from peft import PeftModel
    bnb = _bnb()
    if not isinstance(model, PeftModel):
        fail(f"{label} should return what get_peft_model returns (a PeftModel), got {type(model).__name__}.")
    if model.peft_config["default"].task_type != "CAUSAL_LM":
        fail(f"{label}: the LoRA config's task_type is {model.peft_config['default'].task_type!r}; "
             "use TaskType.CAUSAL_LM, so the wrapped model still predicts the next token.")
    four_bit = {n: m for n, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit)}
    eight_bit = [n for n, m in model.named_modules() if isinstance(m, bnb.nn.Linear8bitLt)]
    if eight_bit or len(four_bit) != 4 * n_layer or {_short(n) for n in four_bit} != set(BLOCK_LINEARS):
        fail(f"{label}: the base model's {4 * n_layer} block linears should be bitsandbytes Linear4bit layers; found "
             f"{len(four_bit)} Linear4bit and {len(eight_bit)} Linear8bitLt. Load the base with a BitsAndBytesConfig "
             "with load_in_4bit=True.")
    types = {m.weight.quant_type for m in four_bit.values()}
    if types != {"nf4"}:
        fail(f"{label}: the 4-bit base uses the type {sorted(types)}; QLoRA's is NF4 (bnb_4bit_quant_type=\"nf4\"), "
             "whose 16 levels sit at the quantiles of a normal distribution, where trained weights lie.")
    if not all(getattr(m.weight.quant_state, "nested", False) for m in four_bit.values()):
        fail(f"{label}: double quantization is off. QLoRA also quantizes the per-block scales "
             "(bnb_4bit_use_double_quant=True): 0.127 bit of scales per weight instead of 0.5.")
    want_dtype = pick_compute_dtype()
    dtypes = {m.compute_dtype for m in four_bit.values()}
    if dtypes != {want_dtype}:
        fail(f"{label}: the 4-bit layers compute in {sorted(map(str, dtypes))}; on this machine that should be "
             f"{want_dtype} (bnb_4bit_compute_dtype=pick_compute_dtype()).")
    with_lora = {n: m for n, m in model.named_modules() if hasattr(m, "lora_A") and "default" in getattr(m, "r", {})}
    placed = sorted({_short(n) for n in with_lora})
    if len(with_lora) != 3 * n_layer or placed != sorted(QLORA_TARGETS):
        fail(f"{label}: LoRA sits on {len(with_lora)} layers of kinds {placed}; Exercise 4's config "
             f"(target_modules=[\"c_attn\", \"c_proj\"]) puts it on {3 * n_layer}: {list(QLORA_TARGETS)} in each block.")
    for name, m in with_lora.items():
        dropout = m.lora_dropout["default"]
        p_drop = getattr(dropout, "p", 0.0)
        if m.r["default"] != 8 or abs(m.scaling["default"] - 2.0) > 1e-9 or abs(p_drop - 0.05) > 1e-9:
            fail(f"{label}: {_short(name)} has r={m.r['default']}, scale alpha/r={m.scaling['default']}, dropout "
                 f"{p_drop}; Exercise 4's config is r=8, lora_alpha=16 (scale 2), lora_dropout=0.05.")
    for name, p in model.named_parameters():
        if "lora_" in name:
            if not p.requires_grad or not p.dtype.is_floating_point:
                fail(f"{label}: the adapter weight {name} should train in a float dtype "
                     f"(requires_grad={p.requires_grad}, dtype {p.dtype}).")
        elif p.requires_grad:
            fail(f"{label}: {name} trains, but everything outside LoRA's A and B stays frozen (bias=\"none\").")
    base = model.get_base_model()
    with warnings.catch_warnings():  # transformers 5.23 renames it is_activation_checkpointing (the floor, 5.2, does not)
        warnings.simplefilter("ignore")
        checkpointing = getattr(base, "is_gradient_checkpointing", False)
    if not checkpointing:
        fail(f"{label}: gradient checkpointing is off, so this model was not prepared for 4-bit training. Call "
             "prepare_model_for_kbit_training(model) on the 4-bit model before get_peft_model: it freezes the "
             "base, keeps the unquantized layers in float32 and switches on gradient checkpointing.")
    embed = model.get_input_embeddings()
    with torch.enable_grad():
        out = embed(torch.zeros(1, 1, dtype=torch.long, device=embed.weight.device))
    if not out.requires_grad:
        fail(f"{label}: the input embeddings' output does not require grad, so with gradient checkpointing no "
             "gradient reaches the adapters of the checkpointed blocks: prepare_model_for_kbit_training(model) "
             "enables it (model.enable_input_require_grads()).")
    loose = sorted({str(p.dtype) for p in model.parameters()
                    if p.dtype.is_floating_point and p.dtype != torch.float32})
    if loose:
        fail(f"{label}: some unquantized parameters are in {loose}; prepare_model_for_kbit_training keeps layer "
             "norms, embeddings and biases in float32 for stable training.")
    _check_device(model, label, " (device_map={'': 0} while loading)")


def check_make_qlora_model(ns):
    fn = lookup(ns, "make_qlora_model")
    seed = fresh_seed()
    path, config = small_checkpoint(seed)
    label = f"seed {seed}: make_qlora_model(<a small GPT-2 checkpoint: {_describe(config)}>)"
    with _quiet():
        small = call(fn, path, what=label)
    if getattr(getattr(small, "config", None), "n_layer", config.n_layer) != config.n_layer:
        fail(f"{label} returned a model with {small.config.n_layer} blocks, not {config.n_layer}: load the "
             "checkpoint you are given (from_pretrained(checkpoint, ...)), not always GPT-2.")
    _check_qlora(small, label, config.n_layer)
    del small
    free_cuda_memory()
    full = ns.get("qlora_model")
    if not isinstance(full, torch.nn.Module):  # the notebook's own cell did not build it: build it here
        with _quiet():
            full = call(fn, what="make_qlora_model()")
    _check_qlora(full, "qlora_model = make_qlora_model()", N_BLOCKS)
    trainable, total = reference_count(full)
    passed(f"make_qlora_model: GPT-2's 48 block linears in NF4 with double quantization, computing in "
           f"{pick_compute_dtype()}, prepared for k-bit training, LoRA r=8 on {list(QLORA_TARGETS)} "
           f"({trainable:,} of {total:,} parameters train); also on a random small GPT-2 (seed {seed}).")


@functools.cache
def _reference_qlora_gpt2():
    return reference_qlora_model()


def _compare_counts(fn, model, label):
    want = reference_count(model)
    got = call(fn, model, what=f"count_parameters({label})")
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        fail(f"count_parameters({label}) should return two numbers (trainable, total), got {got!r}.")
    got = tuple(int(round(float(x.item() if isinstance(x, torch.Tensor) else x))) if x is not None else None
                for x in got)
    numel_total = sum(p.numel() for p in model.parameters())
    if got[0] != want[0]:
        hint = (" That is every parameter: count only those with requires_grad." if got[0] in (want[1], numel_total)
                else " Count the numbers in parameters whose requires_grad is True.")
        fail(f"count_parameters({label}) gave {got[0]:,} trainable, expected {want[0]:,}.{hint}")
    if got[1] != want[1]:
        hint = (" That adds up numel(), but a packed 4-bit weight's numel() counts bytes holding two numbers each: "
                "count each 4-bit layer's weight as in_features x out_features." if got[1] == numel_total else "")
        fail(f"count_parameters({label}) gave {got[1]:,} in total, expected {want[1]:,}.{hint}")
    return want


def check_count_parameters(ns):
    fn = lookup(ns, "count_parameters")
    seed = fresh_seed()
    rng = random.Random(seed)
    path, config = small_checkpoint(seed)
    r = rng.choice([2, 4, 16])
    targets = rng.choice([["c_attn"], ["c_fc", "mlp.c_proj"], ["attn.c_proj"], ["c_attn", "c_fc"]])
    small = reference_qlora_model(path, r=r, target_modules=targets)
    _compare_counts(fn, small, f"<small QLoRA GPT-2, r={r} on {targets}, seed {seed}>")
    del small
    full = ns.get("qlora_model")
    if not isinstance(full, torch.nn.Module):
        full = _reference_qlora_gpt2()
    trainable, total = _compare_counts(fn, full, "qlora_model")
    passed(f"count_parameters: {trainable:,} of {total:,} on qlora_model (4-bit weights counted as numbers), "
           f"and on a small QLoRA model it never saw (seed {seed}).")


def reference_step_peak(batch) -> int:
    """Peak GPU memory of a steady-state QLoRA step on `batch`: model, optimizer state, activations, gradients."""
    with measure_cuda_memory() as measured:
        model = reference_qlora_model()
        optimizer = reference_optimizer(model)
        reference_train_step(model, batch, optimizer)  # creates the optimizer state
        torch.cuda.reset_peak_memory_stats()
        reference_train_step(model, batch, optimizer)
        del model, optimizer
    free_cuda_memory()
    return measured.peak


def check_qlora_step_peak(ns):
    require_cuda(f"Grading qlora_step_peak ({GPU_MESSAGE}): it")
    fn = lookup(ns, "qlora_step_peak")
    seed = fresh_seed()
    rng = random.Random(seed)
    shapes = [(4, 128), (rng.choice([2, 4, 8]), rng.choice([64, 96, 128]))]
    for rows, length in shapes:
        generator = torch.Generator().manual_seed(seed + rows + length)
        batch = torch.randint(0, 4000, (rows, length), generator=generator).to("cuda")
        with _quiet():
            want = reference_step_peak(batch)
        dependencies = dict(make_qlora_model=reference_qlora_model, make_optimizer=reference_optimizer,
                            train_step=reference_train_step)
        with using_reference(ns, **dependencies), _ballast(PEAK_BALLAST), _quiet():
            got = call(fn, batch, what=f"qlora_step_peak(<batch of {rows} x {length}>)")
        free_cuda_memory()
        try:
            got = float(got)
        except (TypeError, ValueError):
            fail(f"qlora_step_peak should return bytes (a number), got {type(got).__name__}.")
        if abs(got - want) > PEAK_TOLERANCE * want:
            fail(f"seed {seed}: on a batch of {rows} x {length} tokens qlora_step_peak gave {got / 1e6:,.1f} MB; the "
                 f"grader's own measurement of the same step is {want / 1e6:,.1f} MB ({PEAK_TOLERANCE:.0%} tolerance). "
                 "Measure from before loading (measure_cuda_memory), run one step to create the optimizer state, "
                 "reset the peak counter, and return the peak (measured.peak) of the second step.")
    passed(f"qlora_step_peak agrees with the grader's own measurements within {PEAK_TOLERANCE:.0%}, on "
           f"{shapes[0][0]} x {shapes[0][1]} and {shapes[1][0]} x {shapes[1][1]} token batches (seed {seed}).")
