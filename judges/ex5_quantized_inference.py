"""Exercise 5's judges (quantized inference and QLoRA with bitsandbytes).

The judges describe the inputs (configs, random small GPT-2s drawn from a fresh seed, stand-ins for an
answer's helpers); the collector (graders/ex5_quantized_inference.py) builds them in the notebook's process,
calls the student's names and reports models as plain data. Expected values come from the `reference_`
tasks below, which build the same fixtures from the same seeds in a process of their own (this module's
own process must not import bitsandbytes: on a GPU machine that initializes CUDA), or, for structure,
from the rules of the lesson applied to what the collector reported.

bitsandbytes quantizes on the CPU too, so everything but the measured GPU memory is judged on any machine;
the `test_cuda_` checks are refused at once (nothing collected) where the notebook has no CUDA."""
import math
import random

from judges._core import Malformed, Opaque, call, defined, fail, flag, items, part, text

EXERCISE = "ex5_quantized_inference"
N_BLOCKS = 12  # GPT-2 small
BLOCK_LINEARS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
N_QUANTIZED = N_BLOCKS * len(BLOCK_LINEARS)  # 48: every block linear
BNB_KINDS = ("Linear8bitLt", "Linear4bit")
GPU_MESSAGE = "must be graded on a GPU"
# utils.require_cuda's words, as the old single-process grader raised them
NO_CUDA = ("Grading {} (" + GPU_MESSAGE + "): it needs a CUDA GPU, and this machine has none. In Colab: Runtime > "
           "Change runtime type > T4 GPU. Instructors: grade this notebook on a GPU machine.")

QLORA_TARGETS = ("attn.c_attn", "attn.c_proj", "mlp.c_proj")  # where ["c_attn", "c_proj"] puts LoRA in GPT-2
LEARNING_RATE = 5e-4  # Exercise 4's
LOAD_BALLAST = 64 * 2**20  # memory in use before each measure_load_memory call
LOAD_TOLERANCE = 0.10  # measure_load_memory against the grader's own fresh measurement
PEAK_TOLERANCE = 0.10  # a student's peak may differ from the grader's own by this fraction
PEAK_BALLAST = 256 * 2**20  # memory in use before the student's measurement (a real notebook holds models)

# ---------------------------------------------------------------------------------------- inputs
def _dtype_name(ctx) -> str:
    return str(ctx.compute_dtype).replace("torch.", "")


def _config(kind: str, compute_dtype: str = None, **extra) -> dict:
    """A BitsAndBytesConfig as keywords (graders/ex5_quantized_inference.py builds it)."""
    if kind == "int8":
        return {"load_in_8bit": True, **extra}
    return {"load_in_4bit": True, "bnb_4bit_quant_type": "fp4" if kind == "fp4" else "nf4",
            "bnb_4bit_compute_dtype": compute_dtype, **extra}


def _checkpoint(seed: int) -> dict:
    """The shape of a random small GPT-2 drawn from `seed` (its weights too are drawn from it)."""
    rng = random.Random(seed)
    n_head = rng.choice([2, 4])
    return {"seed": seed, "n_embd": 64 * rng.choice([1, 2]), "n_head": n_head, "n_layer": rng.randint(1, 3),
            "vocab_size": rng.randint(64, 512), "n_positions": 64}


def _describe(checkpoint: dict) -> str:
    return f"n_embd={checkpoint['n_embd']}, n_layer={checkpoint['n_layer']}, vocab_size={checkpoint['vocab_size']}"


def _short(name: str) -> str:
    """base_model.model.transformer.h.3.attn.c_attn.base_layer -> attn.c_attn"""
    parts = [p for p in name.split(".") if p != "base_layer"]
    return ".".join(parts[-2:])


def _torch_name(dtype) -> str:
    return "None" if dtype is None else f"torch.{dtype}"


# ------------------------------------------------------------------------------------ reading data
def _optional_text(data, key: str):
    got = part(data, key)
    if got is not None and type(got) is not str:
        raise Malformed(f"{key!r} is not text or null")
    return got


def _optional_number(data, key: str):
    got = part(data, key)
    if got is not None and (type(got) not in (int, float) or not math.isfinite(got)):
        raise Malformed(f"{key!r} is not a number or null")
    return got


def _int(data, key: str) -> int:
    got = part(data, key)
    if type(got) is not int or got < 0:
        raise Malformed(f"{key!r} is not a count")
    return got


def _dict(data, key: str) -> dict:
    got = part(data, key)
    if type(got) is not dict:
        raise Malformed(f"{key!r} is not a record")
    return got


def _type_name(got) -> str:
    return got.type_name.rsplit(".", 1)[-1] if isinstance(got, Opaque) else type(got).__name__


def _float(got):
    """A returned number (int, float, or a one-element tensor) as a float; None for anything else."""
    import torch
    if isinstance(got, torch.Tensor):
        return float(got.reshape(()).double()) if got.numel() == 1 and not got.dtype == torch.bool else None
    if isinstance(got, bool) or not isinstance(got, (int, float)):
        return None
    return float(got)


class _Layer:
    """One layer as the collector described it."""

    def __init__(self, data):
        if type(data) is not dict:
            raise Malformed("a layer description that is not a record")
        self.kind = text(data, "kind")
        self.in_features = self.out_features = None
        self.quant_type = self.compute_dtype = None
        self.nested = False
        if self.kind in BNB_KINDS:
            self.in_features, self.out_features = _int(data, "in_features"), _int(data, "out_features")
        if self.kind == "Linear4bit":
            self.quant_type = _optional_text(data, "quant_type")
            self.compute_dtype = _optional_text(data, "compute_dtype")
            self.nested = flag(data, "nested")
        self.lora = None
        if "lora" in data:
            lora = _dict(data, "lora")
            self.lora = (_int(lora, "r"), _optional_number(lora, "scaling"), _optional_number(lora, "dropout"))


class _Parameter:
    def __init__(self, row):
        if type(row) is not list or len(row) != 7:
            raise Malformed("a parameter row that is not [name, dtype, shape, numel, requires_grad, device, floating]")
        self.name, self.dtype, shape, self.numel, self.requires_grad, self.device, self.floating = row
        if (type(self.name) is not str or type(self.dtype) is not str or type(self.device) is not str
                or type(shape) is not list or any(type(n) is not int for n in shape)
                or type(self.numel) is not int or self.numel < 0
                or type(self.requires_grad) is not bool or type(self.floating) is not bool):
            raise Malformed("a parameter row of the wrong types")


class _Model:
    """A model (or whatever came back instead) as the collector described it, every field checked."""

    def __init__(self, data):
        if type(data) is not dict:
            raise Malformed("a model description that is not a record")
        self.data = data
        self.type = text(data, "type")
        self.is_module = flag(data, "is_module")
        self.is_peft = False
        if not self.is_module:
            return
        self.is_peft = flag(data, "is_peft")
        modules = _dict(data, "modules")
        if len(modules) > 100_000:
            raise Malformed("too many layers")
        self.modules = {name: _Layer(layer) for name, layer in modules.items()}
        self.parameters = [_Parameter(row) for row in items(data, "parameters")]
        self.lm_head = _optional_text(data, "lm_head")
        n_layer = part(data, "n_layer")
        if n_layer is not None and type(n_layer) is not int:
            raise Malformed("'n_layer' is not an integer or null")
        self.n_layer = n_layer

    # what only a description made for training holds
    @property
    def task_type(self):
        return _optional_text(self.data, "task_type")

    @property
    def gradient_checkpointing(self) -> bool:
        return flag(self.data, "gradient_checkpointing")

    @property
    def embeddings_output_requires_grad(self) -> bool:
        got = part(self.data, "embeddings_output_requires_grad")
        if got is not None and type(got) is not bool:
            raise Malformed("'embeddings_output_requires_grad' is not true, false or null")
        return got is True

    def layers(self, kind: str) -> dict:
        return {name: layer for name, layer in self.modules.items() if layer.kind == kind}


def _model_of(record, what: str) -> _Model:
    """The model a call returned (or the notebook held), as described; a failure naming the call if it raised."""
    call(record, what)
    if "describe_error" in record:
        fail(f"{what} returned something the grader could not look inside: {text(record, 'describe_error')}")
    return _Model(part(record, "model"))


def _counts(model: _Model) -> tuple:
    """(trainable, total, numel) of a described model, a packed 4-bit weight counted as in x out numbers."""
    numbers = {f"{name}.weight": layer.in_features * layer.out_features
               for name, layer in model.layers("Linear4bit").items()}
    trainable = total = numel = 0
    for p in model.parameters:
        n = numbers.get(p.name, p.numel)
        total += n
        numel += p.numel
        trainable += n if p.requires_grad else 0
    return trainable, total, numel


def _check_device(model: _Model, what: str, cuda_hint: str, device: str) -> None:
    """Every weight of `model` on the notebook's device (the GPU where there is one)."""
    where = {p.device for p in model.parameters}
    if where != {device}:
        fail(f"{what}: weights on {sorted(where)}; on this machine they belong on {device}"
             + (f"{cuda_hint}." if device == "cuda" else "."))


# -------------------------------------------------------------------------------------- configs
def _read_config(data, name: str) -> dict:
    defined(part(data, "answer"), name, callable_=False)
    cfg = _dict(data, "config")
    out = {"is_bnb_config": flag(cfg, "is_bnb_config"), "type": text(cfg, "type")}
    if out["is_bnb_config"]:
        out.update(load_in_8bit=flag(cfg, "load_in_8bit"), load_in_4bit=flag(cfg, "load_in_4bit"),
                   quant_type=_optional_text(cfg, "quant_type"), compute_dtype=_optional_text(cfg, "compute_dtype"),
                   double_quant=flag(cfg, "double_quant"))
        skipped = part(cfg, "skip_modules")
        out["skip_modules"] = [s for s in skipped if type(s) is str] if type(skipped) is list else []
    return out


def ask_config_8bit(ctx):
    return {"answer": "config_8bit"}, {}


def judge_config_8bit(data, secret):
    cfg = _read_config(data, "config_8bit")
    if not cfg["is_bnb_config"]:
        fail(f"`config_8bit` should be a transformers.BitsAndBytesConfig, but it is a {cfg['type']}: "
             "from_pretrained takes it as quantization_config=.")
    if not cfg["load_in_8bit"]:
        fail("config_8bit does not switch 8-bit loading on: BitsAndBytesConfig(load_in_8bit=True).")
    if cfg["load_in_4bit"]:
        fail("config_8bit asks for 4-bit loading too: only load_in_8bit=True.")
    skipped = cfg["skip_modules"]
    if any(any(piece in s for piece in ("c_attn", "c_proj", "c_fc", "attn", "mlp", "h.")) for s in skipped):
        fail(f"config_8bit keeps {skipped} out of quantization: the transformer blocks' linears must be quantized.")
    return "config_8bit: BitsAndBytesConfig(load_in_8bit=True)."


def ask_config_4bit(ctx):
    return {"answer": "config_4bit"}, {"compute_dtype": _dtype_name(ctx)}


def judge_config_4bit(data, secret):
    cfg = _read_config(data, "config_4bit")
    if not cfg["is_bnb_config"]:
        fail(f"`config_4bit` should be a transformers.BitsAndBytesConfig, but it is a {cfg['type']}.")
    if not cfg["load_in_4bit"] or cfg["load_in_8bit"]:
        fail("config_4bit should switch 4-bit loading on (load_in_4bit=True) and 8-bit off.")
    if cfg["quant_type"] != "nf4":
        fail(f"config_4bit uses the 4-bit type {cfg['quant_type']!r}; set bnb_4bit_quant_type=\"nf4\" "
             "(NormalFloat4: its 16 levels follow the bell shape of trained weights; \"fp4\" is the default).")
    want, got = secret["compute_dtype"], cfg["compute_dtype"]
    if got != want:
        machine = ("this GPU supports bfloat16" if want == "bfloat16" else
                   "this GPU has no bfloat16 (a T4, say)" if want == "float16" else "this machine has no CUDA GPU")
        fail(f"config_4bit computes in {_torch_name(got)}, but {machine}, so the compute dtype should be "
             f"{_torch_name(want)}. Choose it on the machine that runs the notebook: "
             "bnb_4bit_compute_dtype=pick_compute_dtype().")
    return (f"config_4bit: NF4, compute dtype {_torch_name(want)} (right for this machine), "
            f"double quantization {'on' if cfg['double_quant'] else 'off'}.")


# ------------------------------------------------------------------------------------ load_quantized
def ask_load_quantized(ctx):
    # FP4 rather than the lesson's NF4, and the MLP kept out: a loader that ignores its argument cannot pass by
    # luck. (Keeping the MLP out also spares two thirds of the 4-bit rounding, seconds on a CPU.)
    mlp = [name for name in BLOCK_LINEARS if name.startswith("mlp.")]
    cases = [{"label": "an 8-bit config", "config": _config("int8"), "handed": True, "bits": 8, "quant_type": None,
              "kept": []},
             {"label": "an FP4 config keeping the MLP unquantized",
              "config": _config("fp4", _dtype_name(ctx), llm_int8_skip_modules=["lm_head", *mlp]), "bits": 4,
              "quant_type": "fp4", "kept": mlp},
             {"label": "None", "config": None, "bits": None, "quant_type": None, "kept": []}]
    request = {"cases": [{"config": case["config"], "handed": case.get("handed", False)} for case in cases]}
    return request, {"cases": cases, "device": "cuda" if ctx.cuda else "cpu"}


def _check_loaded(model: _Model, label, bits, quant_type, kept, device):
    """`model` as load_quantized(config) must return it; `kept`: block linears the config leaves unquantized."""
    if not model.is_module:
        fail(f"load_quantized({label}) should return the loaded model, got {model.type}.")
    found = {name: 8 if layer.kind == "Linear8bitLt" else 4
             for name, layer in model.modules.items() if layer.kind in BNB_KINDS}
    if bits is None:
        if found:
            fail(f"load_quantized(None) should load plain float32 GPT-2, but {len(found)} layers are quantized.")
        dtypes = {p.dtype for p in model.parameters}
        if dtypes != {"float32"}:
            fail(f"load_quantized(None) should keep every weight in float32, found {sorted(map(_torch_name, dtypes))}.")
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
        if model.lm_head in BNB_KINDS:
            fail(f"load_quantized({label}) quantized lm_head; it shares its matrix with the embeddings and stays unquantized.")
        if quant_type is not None:
            types = {model.modules[n].quant_type for n in found}
            if types != {quant_type}:
                fail(f"load_quantized({label}) gave 4-bit type {sorted(types, key=str)}; the config asks for "
                     f"{quant_type!r}. Use the config passed in, not a global one.")
    _check_device(model, f"load_quantized({label})", " (device_map={'': 0})", device)


def judge_load_quantized(data, secret):
    defined(part(data, "answer"), "load_quantized")
    for case, record in zip(secret["cases"], items(data, "cases", len(secret["cases"]))):
        model = _model_of(record, f"load_quantized({case['label']})")
        _check_loaded(model, case["label"], case["bits"], case["quant_type"], case["kept"], secret["device"])
    mlp = [name for name in BLOCK_LINEARS if name.startswith("mlp.")]
    return (f"load_quantized: each config's layers quantized as it asks (8-bit: all {N_QUANTIZED} block linears; "
            f"FP4 with the MLP kept out: the {N_BLOCKS * (len(BLOCK_LINEARS) - len(mlp))} attention linears, the "
            "4-bit type too), embeddings and lm_head unquantized, float32 for None, weights on the right device.")


# ----------------------------------------------------------------------------- expected_weight_bytes
# GPT-2 small's configuration, as GPT2Config's defaults give it (the real gpt2 and its offline stand-in alike).
GPT2_CONFIG = {"n_embd": 768, "n_head": 12, "n_layer": 12, "vocab_size": 50257, "n_positions": 1024}
SKIP_CHOICES = (["c_fc"], ["c_attn"], ["attn.c_proj"], ["mlp.c_proj"], ["c_proj"], ["c_attn", "mlp.c_fc"])


def footprint(config: dict, quantization: dict = None, *, quantize=True, skip=True, n_inner=True, tie=True,
              scales=False, head=True) -> float:
    """get_memory_footprint() of GPT-2 of shape `config` loaded with `quantization` (keywords of a
    BitsAndBytesConfig; None: float32), from the architecture: transformers 5 keeps everything bitsandbytes
    does not quantize in the checkpoint's float32, GPT-2 has no buffers, a tied lm_head is wte itself, and the
    footprint counts parameters only: the scales bitsandbytes keeps beside the weights (weight.SCB,
    weight.quant_state) are attributes. An untied lm_head stays float32 when llm_int8_skip_modules is None
    (transformers then skips the output embedding by default) or names it; an explicit list replaces that
    default, so a list without it quantizes lm_head like the blocks' linears. The keywords switch off one rule
    each, for the messages: what a prediction that misses that rule gives (head=False: an untied lm_head never
    quantized)."""
    e, layers, vocab = config["n_embd"], config["n_layer"], config["vocab_size"]
    positions = config.get("n_positions", 64)
    inner = config.get("n_inner") if n_inner else None
    inner = inner or 4 * e
    linears = {"attn.c_attn": (e, 3 * e), "attn.c_proj": (e, e), "mlp.c_fc": (e, inner), "mlp.c_proj": (inner, e)}
    q = quantization if quantize else None
    per_number = None if q is None else 1 if q.get("load_in_8bit") else 0.5
    skipped = (q or {}).get("llm_int8_skip_modules") if skip else None
    total = 4 * ((vocab + positions) * e + 2 * e)  # wte, wpe, ln_f
    if config.get("tie_word_embeddings", True) != tie:  # an lm_head of its own (no bias)
        head_quantized = (head and per_number is not None and skipped is not None
                          and not any("lm_head".endswith(entry) for entry in skipped))
        total += vocab * e * (per_number if head_quantized else 4)
    for name, (n_in, n_out) in linears.items():
        quantized = per_number is not None and not any(name.endswith(entry) for entry in skipped or [])
        numbers = n_in * n_out
        total += layers * 4 * n_out  # the bias stays float32
        total += layers * (numbers * per_number if quantized else 4 * numbers)
        if quantized and scales:
            total += layers * (4 * n_out if per_number == 1 else
                               numbers / 64 + 4 * math.ceil(numbers / 64 / 256) if q.get("bnb_4bit_use_double_quant")
                               else 4 * math.ceil(numbers / 64))
    return total + layers * 4 * 4 * e  # ln_1 and ln_2


def _config_words(config: dict) -> str:
    inner = config.get("n_inner")
    return (f"GPT2Config(n_embd={config['n_embd']}, n_layer={config['n_layer']}, vocab_size={config['vocab_size']}, "
            f"n_positions={config.get('n_positions', 64)}, n_inner={inner}, "
            f"tie_word_embeddings={config.get('tie_word_embeddings', True)})")


def _quantization_words(q: dict) -> str:
    if q is None:
        return "None"
    shown = []
    for key, val in q.items():
        shown.append(f"{key}=torch.{val}" if key == "bnb_4bit_compute_dtype" else f"{key}={val!r}")
    return f"BitsAndBytesConfig({', '.join(shown)})"


def ask_expected_weight_bytes(ctx):
    """GPT-2 small in float32, 8-bit and NF4 (the lesson's own three), then small random shapes that draw every
    rule: an MLP width of its own (n_inner), an lm_head of its own (tie_word_embeddings=False), layers kept out
    of quantization (llm_int8_skip_modules), FP4 and NF4 with and without double quantization, every compute
    dtype. The small ones are also loaded for real (in the reference process), so the rule is checked against
    get_memory_footprint() on the grading machine's transformers and bitsandbytes."""
    seed, dtype = ctx.seed, _dtype_name(ctx)
    rng = random.Random(seed)
    cases = [(dict(GPT2_CONFIG), None), (dict(GPT2_CONFIG), _config("int8")),
             (dict(GPT2_CONFIG), _config("nf4", dtype, bnb_4bit_use_double_quant=True))]

    def small(n_inner: bool, tied: bool) -> dict:
        e = 64 * rng.choice([1, 2, 3])
        return {"n_embd": e, "n_head": rng.choice([1, 2]), "n_layer": rng.randint(1, 3),
                "vocab_size": rng.randint(64, 512), "n_positions": rng.choice([32, 64, 128]),
                "n_inner": 64 * rng.choice([k for k in range(1, 9) if 64 * k != 4 * e]) if n_inner else None,
                "tie_word_embeddings": tied}

    four_bit = [("nf4", True), ("nf4", False), ("fp4", True), ("fp4", False)]
    rng.shuffle(four_bit)
    dtypes = ["float32", "bfloat16", "float16"]
    rng.shuffle(dtypes)
    skips = rng.sample(SKIP_CHOICES, 2)
    cases += [(small(True, False), _config("int8", llm_int8_skip_modules=["lm_head", *skips[0]])),
              (small(False, True), _config(four_bit[0][0], dtypes[0], bnb_4bit_use_double_quant=four_bit[0][1],
                                           llm_int8_skip_modules=["lm_head", *skips[1]])),
              (small(rng.random() < 0.5, False), _config(four_bit[1][0], dtypes[1],
                                                         bnb_4bit_use_double_quant=four_bit[1][1])),
              # an untied lm_head with a skip list that leaves it out: quantized like the blocks' linears
              (small(rng.random() < 0.5, False),
               _config("int8", llm_int8_skip_modules=list(skips[0])) if rng.random() < 0.5 else
               _config(four_bit[2][0], dtypes[2], bnb_4bit_use_double_quant=four_bit[2][1],
                       llm_int8_skip_modules=list(skips[1]))),
              (small(True, rng.random() < 0.5), None),
              (small(False, True), _config("int8"))]
    checked = [{"checkpoint": {**config, "seed": seed + i}, "quantization": q}
               for i, (config, q) in enumerate(cases) if config["n_embd"] < GPT2_CONFIG["n_embd"]]
    real = ctx.reference(EXERCISE, "config_footprints", cases=checked)
    for case, measured in zip(checked, real):
        config = {k: v for k, v in case["checkpoint"].items() if k != "seed"}
        if footprint(config, case["quantization"]) != measured:
            raise AssertionError(f"the footprint rule is out of step with this machine's libraries: "
                                 f"{_config_words(config)} with {_quantization_words(case['quantization'])} loads "
                                 f"with get_memory_footprint() {measured}, the rule says "
                                 f"{footprint(config, case['quantization'])}")
    request = {"cases": [{"config": config, "quantization": q} for config, q in cases]}
    return request, {"seed": seed, "cases": [[config, q] for config, q in cases]}


def _mistake(config: dict, q: dict, got: float) -> str:
    """What a prediction of `got` most likely missed (empty where it matches no known slip)."""
    slips = [({"quantize": False}, "ignores the quantization: a quantized layer's weight takes 1 byte (8-bit) or "
                                   "half a byte (4-bit) per number"),
             ({"scales": True}, "counts the scales, which the footprint leaves out: bitsandbytes keeps them as "
                                "attributes of the weight (weight.SCB, weight.quant_state), not as parameters or "
                                "buffers"),
             ({"skip": False}, "ignores llm_int8_skip_modules: a layer whose name ends with one of its entries stays "
                               "unquantized, in float32"),
             ({"n_inner": False}, "ignores n_inner: the MLP's width is config.n_inner, and 4 x n_embd only when it is "
                                  "None"),
             ({"head": False}, "keeps an untied lm_head in float32 under an explicit llm_int8_skip_modules that "
                               "does not name it: transformers skips lm_head by default only when that list is None; "
                               "a list of your own replaces the default, so lm_head is quantized"),
             ({"tie": False}, "gets tie_word_embeddings backwards: a tied lm_head is wte itself and counts once; an "
                              "untied one is a matrix of its own")]
    for rule, words in slips:
        if q is None and any(key in rule for key in ("quantize", "scales", "skip", "head")):
            continue
        if abs(footprint(config, q, **rule) - got) <= 1:
            return f" That is what a prediction gives that {words}."
    return ""


def judge_expected_weight_bytes(data, secret):
    seed = secret["seed"]
    defined(part(data, "answer"), "expected_weight_bytes")
    for (config, q), record in zip(secret["cases"], items(data, "calls", len(secret["cases"]))):
        what = f"expected_weight_bytes({_config_words(config)}, {_quantization_words(q)})"
        got = call(record, what)
        number = _float(got)
        if number is None or not math.isfinite(number):
            fail(f"expected_weight_bytes should return a number of bytes, got {_type_name(got)}.")
        want = footprint(config, q)
        if not abs(number - want) <= 1:
            fail(f"seed {seed}: {what} gave {number:,.0f} bytes; loaded, that model's get_memory_footprint() is "
                 f"{want:,.0f}.{_mistake(config, q, number)}")
    return (f"expected_weight_bytes predicts get_memory_footprint() from the configurations alone: GPT-2 in float32, "
            f"8-bit and NF4, and random shapes with their own MLP width, an untied lm_head (quantized when a skip "
            f"list leaves it out), layers kept out of "
            f"quantization, FP4 and NF4 with and without double quantization (seed {seed}).")


# ------------------------------------------------------------------------------ measure_load_memory
def _measured(record, label) -> float:
    got = call(record, f"measure_load_memory({label})")
    number = _float(got)
    if number is None:
        fail(f"measure_load_memory({label}) should return bytes (a number), got {_type_name(got)}.")
    return number


def ask_measure_load_memory(ctx):
    if not ctx.cuda:
        fail(NO_CUDA.format("measure_load_memory"))
    dtype = _dtype_name(ctx)
    cases = [("fp32", None, "None"), ("int8", _config("int8"), "<int8 config>"),
             ("nf4", _config("nf4", dtype), "<nf4 config>")]
    # what the loaded weights take, from the architecture (GPT-2 loaded with each config in the reference process)
    expected = ctx.reference(EXERCISE, "fixture_bytes", checkpoint=None, configs={n: c for n, c, _ in cases})
    request = {"cases": [{"config": config} for _, config, _ in cases], "ballast": LOAD_BALLAST}
    return request, {"cases": [[name, label] for name, _, label in cases],
                     "expected": {name: expected[name]["weight_bytes"] for name, _, _ in cases}}


def judge_measure_load_memory(data, secret):
    defined(part(data, "answer"), "measure_load_memory")
    expected, measured = secret["expected"], {}
    for (name, label), record in zip(secret["cases"], items(data, "calls", len(secret["cases"]))):
        measured[name] = _measured(record, label)
    for name in measured:
        low, high = 0.97 * expected[name], 1.12 * expected[name]  # scales: under 3% of the footprint
        if not low <= measured[name] <= high:
            fail(f"measure_load_memory for {name} gave {measured[name] / 1e6:,.1f} MB; from the architecture the "
                 f"loaded weights take {expected[name] / 1e6:,.1f} MB (expected {low / 1e6:,.1f} to {high / 1e6:,.1f}). "
                 "Measure what the load keeps allocated on the GPU (measured.kept), relative to before the load.")
    ratio8, ratio4 = measured["int8"] / measured["fp32"], measured["nf4"] / measured["fp32"]
    if not ratio4 < ratio8 < 0.6:
        fail(f"the quantized models should sit well below float32 (8-bit about {expected['int8'] / expected['fp32']:.2f}x, "
             f"NF4 about {expected['nf4'] / expected['fp32']:.2f}x), measured {ratio8:.2f}x and {ratio4:.2f}x.")
    return (f"measure_load_memory: fp32 {measured['fp32'] / 1e6:.1f} MB, 8-bit {measured['int8'] / 1e6:.1f} MB "
            f"({ratio8:.2f}x), NF4 {measured['nf4'] / 1e6:.1f} MB ({ratio4:.2f}x), as the architecture implies.")


def ask_measure_load_memory_fresh(ctx):
    if not ctx.cuda:
        fail(NO_CUDA.format("measure_load_memory"))
    seed, dtype = ctx.seed, _dtype_name(ctx)
    rng = random.Random(seed)
    choices = [("8-bit, c_fc left unquantized", _config("int8", llm_int8_skip_modules=["lm_head", "c_fc"])),
               ("FP4", _config("fp4", dtype)),
               ("NF4 with double quantization", _config("nf4", dtype, bnb_4bit_use_double_quant=True)),
               ("NF4, mlp.c_proj left unquantized",
                _config("nf4", dtype, llm_int8_skip_modules=["lm_head", "mlp.c_proj"]))]
    # float32 too: a loader that leaves it on the CPU measures 0 there, whatever it does for bitsandbytes.
    cases = [("float32", None)] + rng.sample(choices, 2)
    fresh = [ctx.reference(EXERCISE, "load_memory", config=config)["kept"] for _, config in cases]
    request = {"cases": [{"config": config} for _, config in cases], "ballast": LOAD_BALLAST}
    return request, {"seed": seed, "cases": [[label, kept] for (label, _), kept in zip(cases, fresh)]}


def judge_measure_load_memory_fresh(data, secret):
    seed = secret["seed"]
    defined(part(data, "answer"), "measure_load_memory")
    for (label, kept), record in zip(secret["cases"], items(data, "calls", len(secret["cases"]))):
        got = _measured(record, f"<{label}>")
        if not abs(got - kept) <= LOAD_TOLERANCE * kept:
            fail(f"seed {seed}: for {label} measure_load_memory gave {got / 1e6:,.1f} MB; the grader's own measurement "
                 f"of the same load is {kept / 1e6:,.1f} MB ({LOAD_TOLERANCE:.0%} tolerance).")
    return (f"measure_load_memory agrees with fresh measurements, for float32 and two configs it never saw "
            f"(seed {seed}).")


# ------------------------------------------------------------------------------------------- QLoRA
def _check_qlora(model: _Model, label: str, n_layer: int, compute_dtype: str, device: str) -> None:
    """Fail with a message that teaches unless `model` is QLoRA as the lesson builds it."""
    if not model.is_peft:
        fail(f"{label} should return what get_peft_model returns (a PeftModel), got {model.type}.")
    if model.task_type != "CAUSAL_LM":
        fail(f"{label}: the LoRA config's task_type is {model.task_type!r}; "
             "use TaskType.CAUSAL_LM, so the wrapped model still predicts the next token.")
    four_bit, eight_bit = model.layers("Linear4bit"), model.layers("Linear8bitLt")
    if eight_bit or len(four_bit) != 4 * n_layer or {_short(n) for n in four_bit} != set(BLOCK_LINEARS):
        fail(f"{label}: the base model's {4 * n_layer} block linears should be bitsandbytes Linear4bit layers; found "
             f"{len(four_bit)} Linear4bit and {len(eight_bit)} Linear8bitLt. Load the base with a BitsAndBytesConfig "
             "with load_in_4bit=True.")
    types = {layer.quant_type for layer in four_bit.values()}
    if types != {"nf4"}:
        fail(f"{label}: the 4-bit base uses the type {sorted(types, key=str)}; QLoRA's is NF4 "
             "(bnb_4bit_quant_type=\"nf4\"), whose 16 levels sit at the quantiles of a normal distribution, where "
             "trained weights lie.")
    if not all(layer.nested for layer in four_bit.values()):
        fail(f"{label}: double quantization is off. QLoRA also quantizes the per-block scales "
             "(bnb_4bit_use_double_quant=True): 0.127 bit of scales per weight instead of 0.5.")
    dtypes = {layer.compute_dtype for layer in four_bit.values()}
    if dtypes != {compute_dtype}:
        fail(f"{label}: the 4-bit layers compute in {sorted(map(_torch_name, dtypes))}; on this machine that should "
             f"be {_torch_name(compute_dtype)} (bnb_4bit_compute_dtype=pick_compute_dtype()).")
    with_lora = {name: layer for name, layer in model.modules.items() if layer.lora is not None}
    placed = sorted({_short(n) for n in with_lora})
    if len(with_lora) != 3 * n_layer or placed != sorted(QLORA_TARGETS):
        fail(f"{label}: LoRA sits on {len(with_lora)} layers of kinds {placed}; Exercise 4's config "
             f"(target_modules=[\"c_attn\", \"c_proj\"]) puts it on {3 * n_layer}: {list(QLORA_TARGETS)} in each block.")
    for name, layer in with_lora.items():
        r, scaling, p_drop = layer.lora
        if r != 8 or scaling is None or abs(scaling - 2.0) > 1e-9 or p_drop is None or abs(p_drop - 0.05) > 1e-9:
            fail(f"{label}: {_short(name)} has r={r}, scale alpha/r={scaling}, dropout {p_drop}; Exercise 4's config "
                 "is r=8, lora_alpha=16 (scale 2), lora_dropout=0.05.")
    for p in model.parameters:
        if "lora_" in p.name:
            if not p.requires_grad or not p.floating:
                fail(f"{label}: the adapter weight {p.name} should train in a float dtype "
                     f"(requires_grad={p.requires_grad}, dtype {_torch_name(p.dtype)}).")
        elif p.requires_grad:
            fail(f"{label}: {p.name} trains, but everything outside LoRA's A and B stays frozen (bias=\"none\").")
    if not model.gradient_checkpointing:
        fail(f"{label}: gradient checkpointing is off, so this model was not prepared for 4-bit training. Call "
             "prepare_model_for_kbit_training(model) on the 4-bit model before get_peft_model: it freezes the "
             "base, keeps the unquantized layers in float32 and switches on gradient checkpointing.")
    if not model.embeddings_output_requires_grad:
        fail(f"{label}: the input embeddings' output does not require grad, so with gradient checkpointing no "
             "gradient reaches the adapters of the checkpointed blocks: prepare_model_for_kbit_training(model) "
             "enables it (model.enable_input_require_grads()).")
    loose = sorted({p.dtype for p in model.parameters if p.floating and p.dtype != "float32"})
    if loose:
        fail(f"{label}: some unquantized parameters are in {list(map(_torch_name, loose))}; "
             "prepare_model_for_kbit_training keeps layer norms, embeddings and biases in float32 for stable training.")
    _check_device(model, label, " (device_map={'': 0} while loading)", device)


def ask_make_qlora_model(ctx):
    checkpoint = _checkpoint(ctx.seed)
    return {"checkpoint": checkpoint}, {"seed": ctx.seed, "checkpoint": checkpoint, "compute_dtype": _dtype_name(ctx),
                                        "device": "cuda" if ctx.cuda else "cpu"}


def judge_make_qlora_model(data, secret):
    seed, checkpoint, dtype, device = secret["seed"], secret["checkpoint"], secret["compute_dtype"], secret["device"]
    defined(part(data, "answer"), "make_qlora_model")
    label = f"seed {seed}: make_qlora_model(<a small GPT-2 checkpoint: {_describe(checkpoint)}>)"
    small = _model_of(part(data, "small"), label)
    if small.is_module and small.n_layer is not None and small.n_layer != checkpoint["n_layer"]:
        fail(f"{label} returned a model with {small.n_layer} blocks, not {checkpoint['n_layer']}: load the "
             "checkpoint you are given (from_pretrained(checkpoint, ...)), not always GPT-2.")
    _check_qlora(small, label, checkpoint["n_layer"], dtype, device)
    full = _model_of(part(data, "full"), "make_qlora_model()")  # the notebook's qlora_model, or built by the collector
    _check_qlora(full, "qlora_model = make_qlora_model()", N_BLOCKS, dtype, device)
    trainable, total, _ = _counts(full)
    return (f"make_qlora_model: GPT-2's 48 block linears in NF4 with double quantization, computing in "
            f"{_torch_name(dtype)}, prepared for k-bit training, LoRA r=8 on {list(QLORA_TARGETS)} "
            f"({trainable:,} of {total:,} parameters train); also on a random small GPT-2 (seed {seed}).")


def _lora(r: int, targets: list) -> dict:
    """LoRA for the stand-ins of qlora_step_peak: no dropout, no task type, no k-bit preparation."""
    return {"r": r, "lora_alpha": 2 * r, "target_modules": list(targets), "lora_dropout": 0.0, "bias": "none"}


def _count_model(rng, seed: int, odd: bool, storage: str) -> dict:
    """A plain module (graders/ex5_quantized_inference.py count_fixture) with every trap of the count: a 4-bit
    layer whose numbers fill its last byte halfway (`odd`), one whose packed numbers are stored as `storage`
    (each element then holds 2 x its bytes numbers), an 8-bit layer, frozen and trainable float layers, and a
    head tied to the embedding (one parameter, counted once)."""
    e = 32 * rng.choice([1, 2, 3])
    vocab, r = rng.randint(50, 300), rng.choice([2, 4, 8])
    n_in, n_out = (e + 1, 2 * e + 1) if odd else (e, 2 * e)
    middle = [
        {"name": "packed", "kind": "linear4bit", "in": n_in, "out": n_out, "bias": True,
         "quant_type": rng.choice(["nf4", "fp4"]), "storage": "uint8", "trainable": rng.random() < 0.5},
        {"name": "stored", "kind": "linear4bit", "in": 2 * e, "out": e, "bias": rng.random() < 0.5,
         "quant_type": "nf4", "storage": storage, "trainable": True},
        {"name": "int8", "kind": "linear8bit", "in": e, "out": e, "bias": True, "trainable": False},
        {"name": "lora_A", "kind": "linear", "in": e, "out": r, "bias": False, "trainable": True},
        {"name": "lora_B", "kind": "linear", "in": r, "out": e, "bias": False, "trainable": True},
        {"name": "frozen", "kind": "linear", "in": e, "out": e, "bias": True, "trainable": False},
        {"name": "norm", "kind": "layernorm", "width": e, "trainable": rng.random() < 0.5},
    ]
    rng.shuffle(middle)
    embed = {"name": "embed", "kind": "embedding", "rows": vocab, "cols": e, "trainable": rng.random() < 0.5}
    head = {"name": "head", "kind": "linear", "in": e, "out": vocab, "bias": False, "trainable": True, "tied": "embed"}
    return {"seed": seed, "layers": [embed, *middle, head]}


def count_of(spec: dict) -> dict:
    """(trainable, total) numbers of count_fixture(spec), from the layers' shapes, and what numel() adds up to;
    bitsandbytes' weights are frozen, a tied matrix is one parameter."""
    trainable = total = numel = 0
    for layer in spec["layers"]:
        kind, grad = layer["kind"], layer["trainable"]
        if layer.get("tied"):
            continue
        if kind == "embedding":
            shapes = [(layer["rows"] * layer["cols"], grad, layer["rows"] * layer["cols"])]
        elif kind == "layernorm":
            shapes = [(layer["width"], grad, layer["width"])] * 2
        else:
            numbers = layer["in"] * layer["out"]
            if kind == "linear4bit":
                per_element = 2 * {"uint8": 1, "bfloat16": 2, "float16": 2, "float32": 4}[layer["storage"]]
                stored = math.ceil(math.ceil(numbers / 2) / (per_element // 2))
                shapes = [(numbers, False, stored)]
            elif kind == "linear8bit":
                shapes = [(numbers, False, numbers)]
            else:
                shapes = [(numbers, grad, numbers)]
            if layer["bias"]:
                shapes.append((layer["out"], grad, layer["out"]))
        for n, g, stored in shapes:
            total += n
            numel += stored
            trainable += n if g else 0
    return {"trainable": trainable, "total": total, "numel": numel}


def ask_count_parameters(ctx):
    seed = ctx.seed
    rng = random.Random(seed)
    storages = ["bfloat16", "float32"]
    rng.shuffle(storages)
    models = [_count_model(rng, seed, odd=True, storage=storages[0]),
              _count_model(rng, seed + 1, odd=rng.random() < 0.5, storage=storages[1])]
    return {"models": models}, {"seed": seed, "models": models}


def _layers_words(spec: dict) -> str:
    words = []
    for layer in spec["layers"]:
        kind = layer["kind"]
        if kind == "embedding":
            shape = f"Embedding({layer['rows']}, {layer['cols']})"
        elif kind == "layernorm":
            shape = f"LayerNorm({layer['width']})"
        elif kind == "linear4bit":
            shape = (f"Linear4bit({layer['in']}, {layer['out']}, bias={layer['bias']}, "
                     f"quant_storage=torch.{layer['storage']})")
        elif kind == "linear8bit":
            shape = f"Linear8bitLt({layer['in']}, {layer['out']})"
        else:
            shape = f"Linear({layer['in']}, {layer['out']}, bias={layer['bias']})"
        grad = "trainable" if layer["trainable"] else "frozen"
        state = (f"weight tied to {layer['tied']}" if layer.get("tied") else
                 (f"weight frozen, bias {grad}" if layer["bias"] else "weight frozen")
                 if kind in ("linear4bit", "linear8bit") else grad)
        words.append(f"{layer['name']}={shape} ({state})")
    return "; ".join(words)


def judge_count_parameters(data, secret):
    seed = secret["seed"]
    defined(part(data, "answer"), "count_parameters")
    for spec, record in zip(secret["models"], items(data, "calls", len(secret["models"]))):
        what = f"count_parameters(<a plain torch module: {_layers_words(spec)}>)"
        got = call(record, f"seed {seed}: {what}")
        numbers = [_float(x) for x in got] if isinstance(got, (tuple, list)) and len(got) == 2 else None
        if numbers is None or any(n is None or not math.isfinite(n) for n in numbers):
            fail(f"seed {seed}: {what} should return two numbers (trainable, total), got {got!r}.")
        trainable, total = (int(round(n)) for n in numbers)
        want = count_of(spec)
        if trainable != want["trainable"]:
            hint = (" That is every parameter: count only those with requires_grad."
                    if trainable in (want["total"], want["numel"]) else
                    " Count the numbers in the parameters whose requires_grad is True (each once: a tied matrix is one "
                    "parameter).")
            fail(f"seed {seed}: {what} gave {trainable:,} trainable, expected {want['trainable']:,}.{hint}")
        if total != want["total"]:
            hint = (" That adds up numel(), but a packed 4-bit weight's numel() counts storage elements, each holding "
                    "several numbers: count each 4-bit layer's weight as in_features x out_features."
                    if total == want["numel"] else
                    " Each parameter once (model.parameters() lists a tied matrix once); a 4-bit layer's weight as "
                    "in_features x out_features numbers, whatever dtype stores them (numel() x 2 is off when "
                    "quant_storage is not uint8, and by one when the numbers fill the last byte halfway).")
            fail(f"seed {seed}: {what} gave {total:,} in total, expected {want['total']:,}.{hint}")
    return (f"count_parameters: trainable and total numbers of plain torch modules with 4-bit layers (packed in "
            f"uint8, bfloat16 and float32), an 8-bit layer, frozen, trainable and tied parameters (seed {seed}).")


def ask_qlora_step_peak(ctx):
    if not ctx.cuda:
        fail(NO_CUDA.format("qlora_step_peak"))
    seed = ctx.seed
    rng = random.Random(seed)
    shapes = [(4, 128), (rng.choice([2, 4, 8]), rng.choice([64, 96, 128]))]
    batches = [{"rows": rows, "length": length, "seed": seed + rows + length, "vocab": 4000} for rows, length in shapes]
    # Stand-ins for make_qlora_model, make_optimizer and train_step (graders/ex5_quantized_inference.py,
    # step_stand_ins): LoRA on mlp.c_fc of an NF4 GPT-2 without k-bit preparation, SGD with momentum (its state
    # appears at the first step, as AdamW's does), a loss that is no next-token loss. None is an answer; the same
    # steps are measured by the reference in a process of its own.
    stand_ins = {"quantization": _config("nf4", _dtype_name(ctx)), "lora": _lora(4, ["c_fc"]), "lr": LEARNING_RATE,
                 "momentum": 0.9}
    # The peak depends on the batch's shape, not on its tokens: the reference measures a batch of the same shape
    # drawn from seed 0, so the grading engine measures each shape once per class (it caches by arguments).
    want = [ctx.reference(EXERCISE, "step_peak", batch={**batch, "seed": 0}, stand_ins=stand_ins)["peak"]
            for batch in batches]
    return ({"batches": batches, "stand_ins": stand_ins, "ballast": PEAK_BALLAST},
            {"seed": seed, "shapes": shapes, "want": want})


def judge_qlora_step_peak(data, secret):
    seed, shapes = secret["seed"], secret["shapes"]
    defined(part(data, "answer"), "qlora_step_peak")
    for (rows, length), want, record in zip(shapes, secret["want"], items(data, "calls", len(shapes))):
        got = call(record, f"qlora_step_peak(<batch of {rows} x {length}>)")
        number = _float(got)
        if number is None:
            fail(f"qlora_step_peak should return bytes (a number), got {_type_name(got)}.")
        if not abs(number - want) <= PEAK_TOLERANCE * want:
            fail(f"seed {seed}: on a batch of {rows} x {length} tokens qlora_step_peak gave {number / 1e6:,.1f} MB; the "
                 f"grader's own measurement of the same step is {want / 1e6:,.1f} MB ({PEAK_TOLERANCE:.0%} tolerance). "
                 "Measure from before loading (measure_cuda_memory), run one step to create the optimizer state, "
                 "reset the peak counter, and return the peak (measured.peak) of the second step.")
    return (f"qlora_step_peak agrees with the grader's own measurements within {PEAK_TOLERANCE:.0%}, on "
            f"{shapes[0][0]} x {shapes[0][1]} and {shapes[1][0]} x {shapes[1][1]} token batches (seed {seed}).")


# ------------------------------------------------------------------------------ reference answers
# The lesson's answers, for the reference tasks below and for benchmarks/gpu_figures.py. They import
# bitsandbytes, PEFT and transformers when called, never when this module is imported.
def expected_weight_bytes(model) -> float:
    """Bytes of `model`'s weights: quantized linear weights at 1 or 0.5 byte per number, the rest at their dtype."""
    import bitsandbytes as bnb
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


def qlora_model(source=None, r=8, target_modules=("c_attn", "c_proj")):
    """QLoRA's recipe: NF4 with double quantization, prepare_model_for_kbit_training, LoRA (Exercise 4's config)."""
    import torch
    from peft import LoraConfig, TaskType, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig
    from graders.ex5_quantized_inference import _quiet
    from utils.device import pick_compute_dtype
    from utils.models import gpt2_source
    config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                bnb_4bit_compute_dtype=pick_compute_dtype())
    placement = {"device_map": {"": 0}} if torch.cuda.is_available() else {}
    with _quiet():
        base = AutoModelForCausalLM.from_pretrained(source or gpt2_source(), quantization_config=config, **placement)
        base = prepare_model_for_kbit_training(base)
        lora = LoraConfig(r=r, lora_alpha=2 * r, target_modules=list(target_modules), lora_dropout=0.05, bias="none",
                          task_type=TaskType.CAUSAL_LM)
        return get_peft_model(base, lora)


def qlora_optimizer(model, lr=LEARNING_RATE):
    """bitsandbytes' paged 8-bit AdamW on the trainable parameters (torch's AdamW where bitsandbytes lacks it)."""
    import bitsandbytes as bnb
    import torch
    from graders.ex5_quantized_inference import _quiet
    params = [p for p in model.parameters() if p.requires_grad]
    paged = getattr(bnb.optim, "PagedAdamW8bit", None)
    with _quiet():
        return paged(params, lr=lr) if paged is not None else torch.optim.AdamW(params, lr=lr)


def train_step(model, batch, optimizer):
    """Exercise 4's step: next-token loss on `batch`, one optimizer step; returns the loss."""
    model.train()
    optimizer.zero_grad()
    loss = model(input_ids=batch, labels=batch).loss
    loss.backward()
    optimizer.step()
    return loss.item()


# ------------------------------------------------------------------------- reference tasks (ctx.reference)
def reference_fixture_bytes(checkpoint, configs) -> dict:
    """{kind: {"weight_bytes", "footprint"}} of the collector's fixture: the small checkpoint `checkpoint` (None:
    GPT-2) loaded with each of `configs`. Costs a save and three small loads on a CPU (GPT-2: three loads)."""
    from graders.ex5_quantized_inference import load_fixture
    from utils.memory import free_cuda_memory
    out = {}
    for kind, config in configs.items():
        model = load_fixture(checkpoint, config)
        want, footprint = expected_weight_bytes(model), model.get_memory_footprint()
        if abs(want - footprint) >= 1:
            raise AssertionError(f"grader out of step with get_memory_footprint ({kind}: {want} != {footprint})")
        out[kind] = {"weight_bytes": want, "footprint": footprint}
        del model
    if checkpoint is None:  # GPT-2 itself (small fixtures go with their last reference)
        free_cuda_memory()
    return out


def reference_config_footprints(cases) -> list:
    """get_memory_footprint() of each case's small GPT-2 (cases: [{"checkpoint": the collector's small checkpoint
    spec, "quantization": keywords or None}]), loaded for real: what the footprint rule is checked against."""
    from graders.ex5_quantized_inference import load_fixture
    out = []
    for case in cases:
        model = load_fixture(case["checkpoint"], case["quantization"])
        out.append(model.get_memory_footprint())
        del model
    return out


_warm = set()  # the measurements this process has run once: what CUDA sets up on first use is no longer counted


def _warm_up(task: str, measure) -> None:
    if task not in _warm:
        measure()
        _warm.add(task)


def reference_load_memory(config) -> dict:
    """GPU bytes a load of GPT-2 on GPU 0 with `config` keeps allocated (CUDA only)."""
    from graders.ex5_quantized_inference import _quiet, bnb_config
    from utils.memory import free_cuda_memory, measure_cuda_memory
    from utils.models import load_gpt2

    def measure():
        with measure_cuda_memory() as fresh, _quiet():
            model = load_gpt2(quantization_config=bnb_config(config), device_map={"": 0})
        del model
        free_cuda_memory()
        return fresh.kept

    _warm_up("load_memory", measure)
    return {"kept": measure()}


def reference_step_peak(batch, stand_ins) -> dict:
    """Peak GPU memory of a steady-state step of the collector's stand-ins on the judge's batch, measured as
    qlora_step_peak should: from before the model is built, the peak of the second step (CUDA only)."""
    import torch
    from graders.ex5_quantized_inference import _quiet, step_batch, step_stand_ins
    from utils.memory import free_cuda_memory, measure_cuda_memory
    helpers, tokens = step_stand_ins(stand_ins), step_batch(batch)

    def measure():
        with measure_cuda_memory() as measured, _quiet():
            model = helpers["make_qlora_model"]()
            optimizer = helpers["make_optimizer"](model)
            helpers["train_step"](model, tokens, optimizer)  # creates the optimizer state
            torch.cuda.reset_peak_memory_stats()
            helpers["train_step"](model, tokens, optimizer)
            del model, optimizer
        free_cuda_memory()
        return measured.peak

    _warm_up("step_peak", measure)
    return {"peak": measure()}
