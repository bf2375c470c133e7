"""Hidden checks for Exercise 5 (quantized inference with bitsandbytes).

The graders load their own models with their own configs (a reference loader), so each answer is graded
on its own. bitsandbytes quantizes on the CPU too, so everything but the measured GPU memory is
CPU-gradable; the `test_cuda_` checks stop at once on a machine without CUDA."""
import contextlib
import functools
import logging
import random
import tempfile
import warnings

import torch

from graders._core import call, fail, fresh_seed, lookup, passed, using_reference
from utils.device import pick_compute_dtype, require_cuda
from utils.memory import free_cuda_memory, measure_cuda_memory
from utils.models import gpt2_source

N_QUANTIZED = 48  # c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj in each of 12 blocks
BLOCK_LINEARS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
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


# Cached in functools.cache, not in module globals: the tamper check holds grader constants still.
@functools.cache
def reference_models() -> dict:
    """GPT-2 in float32, 8-bit and NF4, loaded once per grading run."""
    return dict(fp32=reference_load(None), int8=reference_load(reference_config("int8")),
                nf4=reference_load(reference_config("nf4")))


@functools.cache
def small_checkpoint(seed: int) -> tuple:
    """A random small GPT-2 saved to disk (so it loads, and quantizes, like the real one)."""
    from transformers import GPT2Config, GPT2LMHeadModel
    rng = random.Random(seed)
    n_head = rng.choice([2, 4])
    config = GPT2Config(n_embd=64 * rng.choice([1, 2]), n_head=n_head, n_layer=rng.randint(1, 3),
                        vocab_size=rng.randint(64, 512), n_positions=64, bos_token_id=0, eos_token_id=0)
    path = tempfile.mkdtemp(prefix="ex5-grader-")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        GPT2LMHeadModel(config).save_pretrained(path)
    return path, config


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
def _check_loaded(model, label, bits, quant_type=None):
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
        wrong_bits = {n for n, b in found.items() if b != bits}
        if len(found) != N_QUANTIZED or wrong_bits:
            fail(f"load_quantized({label}) should turn GPT-2's {N_QUANTIZED} block linears into bitsandbytes "
                 f"{kind} layers; found {sum(b == bits for b in found.values())} {kind} and "
                 f"{len(found) - sum(b == bits for b in found.values())} others. Pass the config you are given "
                 "as quantization_config=config.")
        names = {".".join(n.split(".")[-2:]) for n in found}
        if names != set(BLOCK_LINEARS):
            fail(f"load_quantized({label}) quantized {sorted(names)}; expected {list(BLOCK_LINEARS)}.")
        bnb = _bnb()
        if isinstance(model.lm_head, (bnb.nn.Linear8bitLt, bnb.nn.Linear4bit)):
            fail(f"load_quantized({label}) quantized lm_head; it shares its matrix with the embeddings and stays unquantized.")
        if quant_type is not None:
            types = {m.weight.quant_type for n, m in model.named_modules() if n in found}
            if types != {quant_type}:
                fail(f"load_quantized({label}) gave 4-bit type {sorted(types)}; the config asks for {quant_type!r}. "
                     "Use the config passed in, not a global one.")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    where = {p.device.type for p in model.parameters()}
    if where != {device}:
        fail(f"load_quantized({label}) left weights on {sorted(where)}; on this machine they belong on {device}"
             + (" (device_map={'': 0})." if device == "cuda" else "."))


def check_load_quantized(ns):
    fn = lookup(ns, "load_quantized")
    # FP4 rather than the lesson's NF4: a loader that ignores its argument cannot pass by luck.
    cases = [("an 8-bit config", reference_config("int8"), 8, None),
             ("an FP4 config", reference_config("fp4"), 4, "fp4"),
             ("None", None, None, None)]
    for label, cfg, bits, quant_type in cases:
        with _quiet():
            model = call(fn, cfg, what=f"load_quantized({label})")
        _check_loaded(model, label, bits, quant_type)
        del model
        free_cuda_memory()
    passed(f"load_quantized: {N_QUANTIZED} Linear8bitLt / Linear4bit layers as each config asks (the 4-bit type "
           "too), embeddings and lm_head unquantized, float32 for None, weights on the right device.")


# ----------------------------------------------------------------------------- expected_weight_bytes
def check_expected_weight_bytes(ns):
    fn = lookup(ns, "expected_weight_bytes")
    for name, model in reference_models().items():
        want = reference_expected_weight_bytes(model)
        footprint = model.get_memory_footprint()
        assert abs(want - footprint) < 1, "grader out of step with get_memory_footprint"
        got = call(fn, model, what=f"expected_weight_bytes(<GPT-2 {name}>)")
        try:
            got = float(got)
        except (TypeError, ValueError):
            fail(f"expected_weight_bytes should return a number of bytes, got {type(got).__name__}.")
        if abs(got - want) > 1:
            fail(f"expected_weight_bytes(<GPT-2 {name}>) should be {want:,.0f} bytes (get_memory_footprint() "
                 f"agrees), got {got:,.0f}. Quantized linear weights count 1 byte (8-bit) or 0.5 byte (4-bit) "
                 "per number, everything else (embeddings, layer norms, biases) its own dtype's size.")
    seed = fresh_seed()
    rng = random.Random(seed)
    for trial in range(2):
        path, config = small_checkpoint(seed + trial)
        skip = ["lm_head"] + rng.sample(["c_fc", "attn.c_attn", "mlp.c_proj"], rng.randint(0, 1))
        for kind in ("int8", "nf4"):
            model = reference_load(reference_config(kind, llm_int8_skip_modules=skip), source=path)
            want = reference_expected_weight_bytes(model)
            got = call(fn, model, what=f"expected_weight_bytes(<small GPT-2 {kind}>)")
            if got is None or abs(float(got) - want) > 1:
                fail(f"seed {seed}: on a small GPT-2 ({_describe(config)}) in {kind}, with {skip} left unquantized, "
                     f"expected_weight_bytes should be {want:,.0f} bytes, got {got!r}. Look at each layer's type: "
                     "which layers are quantized depends on the config, not on their names.")
            del model
            free_cuda_memory()
    passed(f"expected_weight_bytes matches get_memory_footprint() on GPT-2 in float32, 8-bit and NF4, and on "
           f"random small GPT-2s with other layers left unquantized (seed {seed}).")


# --------------------------------------------------------------------------------- memory_footprints
def check_memory_footprints(ns):
    fn = lookup(ns, "memory_footprints")
    models = reference_models()
    got = call(fn, dict(models), what="memory_footprints({'fp32': ..., 'int8': ..., 'nf4': ...})")
    if not isinstance(got, dict):
        fail(f"memory_footprints should return a dict (name -> bytes), got {type(got).__name__}.")
    for name, model in models.items():
        want = model.get_memory_footprint()
        if name not in got:
            fail(f"memory_footprints(models) has no entry {name!r}: keep the names of the dict you are given.")
        if got[name] is None or abs(float(got[name]) - want) > 1:
            fail(f"memory_footprints(models)[{name!r}] should be {want:,} bytes (model.get_memory_footprint()), "
                 f"got {got[name]!r}.")
    seed = fresh_seed()
    path, config = small_checkpoint(seed)
    label = f"tiny-{seed}"
    small = reference_load(reference_config("nf4"), source=path)
    got = call(fn, {label: small}, what=f"memory_footprints({{{label!r}: <small GPT-2>}})")
    want = small.get_memory_footprint()
    if not isinstance(got, dict) or label not in got or abs(float(got[label]) - want) > 1:
        fail(f"seed {seed}: for a small NF4 GPT-2 ({_describe(config)}) under the name {label!r}, "
             f"memory_footprints should give {{{label!r}: {want:,}}}, got {got!r}. Compute from the models, "
             "do not type numbers in.")
    del small
    free_cuda_memory()
    passed(f"memory_footprints: bytes as get_memory_footprint() reports them, for GPT-2 and a random small model (seed {seed}).")


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
