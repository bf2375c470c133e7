"""Exercise 5: realistic wrong answers (each must lose exactly its own test cells' points) and correct
answers written differently (each must keep full marks).

Machine-dependent cases:
- config_4bit is judged against the machine that grades it (pick_compute_dtype()): "bfloat16 typed in" is
  wrong on a CPU and on a T4 but equals the right answer on Ampere and newer GPUs (an H100 included), and
  "float16 typed in" is wrong everywhere but on a T4-class GPU. On any one machine at least two of the three
  wrong versions fail; WRONG lists only the ones that are wrong on the machine running the tests.
- measure_load_memory and qlora_step_peak are graded only on a CUDA GPU (test_cuda_ cells): their wrong and
  alternative versions are meant for the GPU run; on a CPU every version, the reference included, stops at
  require_cuda.
"""
import torch

from utils import pick_compute_dtype

WRONG = {
    "config_8bit": [
        ("a dict of keywords instead of a BitsAndBytesConfig", '''
config_8bit = {"load_in_8bit": True}
'''),
        ("only the outlier threshold set: 8-bit loading never switched on", '''
config_8bit = BitsAndBytesConfig(llm_int8_threshold=6.0)
'''),
    ],
    "config_4bit": [
        ("no quant type, so the default fp4", '''
config_4bit = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=pick_compute_dtype())
'''),
        # A compute dtype typed in is wrong wherever it is not what this machine supports (see above).
        *[(f"{dtype} typed in, but this machine computes in {pick_compute_dtype()}", f'''
config_4bit = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.{dtype})
''') for dtype in ("bfloat16", "float16") if getattr(torch, dtype) != pick_compute_dtype()],
    ],
    "load_quantized": [
        ("the removed load_in_8bit keyword instead of the config", '''
def load_quantized(config=None):
    if config is None:
        return AutoModelForCausalLM.from_pretrained(GPT2)
    return AutoModelForCausalLM.from_pretrained(GPT2, load_in_8bit=True)
'''),
        ("a global config instead of the argument", '''
def load_quantized(config=None):
    placement = {"device_map": {"": 0}} if torch.cuda.is_available() else {}
    if config is None:
        return AutoModelForCausalLM.from_pretrained(GPT2, **placement)
    return AutoModelForCausalLM.from_pretrained(GPT2, quantization_config=config_8bit, **placement)
'''),
    ],
    "expected_weight_bytes": [
        ("the library's footprint of the float32 model built from the config: quantization ignored", '''
def expected_weight_bytes(config, quantization=None):
    with torch.device("meta"):  # the shapes without the memory
        return GPT2LMHeadModel(config).get_memory_footprint()
'''),
        ("the scales counted too (one float32 per row in 8-bit, per block of 64 in 4-bit)", '''
def expected_weight_bytes(config, quantization=None):
    e, mlp = config.n_embd, config.n_inner or 4 * config.n_embd
    shapes = {"c_attn": (e, 3 * e), "attn.c_proj": (e, e), "c_fc": (e, mlp), "mlp.c_proj": (mlp, e)}
    skip = getattr(quantization, "llm_int8_skip_modules", None) or []
    total = 4 * ((config.vocab_size + config.n_positions) * e + 2 * e + config.n_layer * 4 * e)
    total += 0 if config.tie_word_embeddings else 4 * config.vocab_size * e
    for name, (n_in, n_out) in shapes.items():
        total += 4 * config.n_layer * n_out
        if quantization is None or any(name.endswith(s) or s.endswith(name) for s in skip):
            total += 4 * config.n_layer * n_in * n_out
        elif quantization.load_in_8bit:
            total += config.n_layer * (n_in * n_out + 4 * n_out)
        else:
            total += config.n_layer * (n_in * n_out / 2 + 4 * n_in * n_out / 64)
    return total
'''),
        ("GPT-2's own MLP width and tied lm_head assumed: n_inner and tie_word_embeddings ignored", '''
def expected_weight_bytes(config, quantization=None):
    e, layers = config.n_embd, config.n_layer
    linear = layers * (3 * e * e + e * e + 4 * e * e + 4 * e * e)
    biases = layers * (3 * e + e + 4 * e + e)
    other = (config.vocab_size + config.n_positions) * e + layers * 4 * e + 2 * e + biases
    if quantization is None:
        return 4 * (linear + other)
    skip = quantization.llm_int8_skip_modules or []
    kept = sum(layers * n for name, n in [("c_attn", 3 * e * e), ("attn.c_proj", e * e), ("c_fc", 4 * e * e),
                                          ("mlp.c_proj", 4 * e * e)] if any(name.endswith(s) or s.endswith(name) for s in skip))
    per = 1 if quantization.load_in_8bit else 0.5
    return 4 * (other + kept) + per * (linear - kept)
'''),
        ("llm_int8_skip_modules ignored: every block linear quantized", '''
def expected_weight_bytes(config, quantization=None):
    e, mlp, layers = config.n_embd, config.n_inner or 4 * config.n_embd, config.n_layer
    linear = layers * (3 * e * e + e * e + 2 * e * mlp)
    other = (config.vocab_size + config.n_positions) * e + layers * (4 * e + 3 * e + e + mlp + e) + 2 * e
    if not config.tie_word_embeddings:
        other += config.vocab_size * e
    if quantization is None:
        return 4 * (linear + other)
    return 4 * other + linear * (1 if quantization.load_in_8bit else 0.5)
'''),
        ("an untied lm_head always kept in float32, even under a skip list that leaves it out", '''
def expected_weight_bytes(config, quantization=None):
    e, mlp, layers = config.n_embd, config.n_inner or 4 * config.n_embd, config.n_layer
    shapes = {"attn.c_attn": (e, 3 * e), "attn.c_proj": (e, e), "mlp.c_fc": (e, mlp), "mlp.c_proj": (mlp, e)}
    skip = (quantization.llm_int8_skip_modules if quantization is not None else None) or []
    total = 4 * ((config.vocab_size + config.n_positions) * e + 2 * e + layers * 4 * e)
    total += 0 if config.tie_word_embeddings else 4 * config.vocab_size * e
    for name, (n_in, n_out) in shapes.items():
        total += 4 * layers * n_out
        if quantization is None or any(name.endswith(s) for s in skip):
            total += 4 * layers * n_in * n_out
        else:
            total += layers * n_in * n_out * (1 if quantization.load_in_8bit else 0.5)
    return total
'''),
    ],
    "measure_load_memory": [  # graded on a GPU only
        ("absolute memory_allocated() after loading, not what the load added", '''
def measure_load_memory(config=None):
    net = load_quantized(config)
    torch.cuda.synchronize()
    used = torch.cuda.memory_allocated()
    del net
    return used
'''),
        ("loaded without device placement: float32 stays on the CPU and measures 0", '''
def measure_load_memory(config=None):
    with measure_cuda_memory() as measured:
        net = AutoModelForCausalLM.from_pretrained(GPT2, quantization_config=config)
    del net
    return measured.kept
'''),
    ],
    "make_qlora_model": [
        ("prepare_model_for_kbit_training forgotten", """
def make_qlora_model(checkpoint=GPT2):
    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                      bnb_4bit_compute_dtype=pick_compute_dtype())
    placement = {"device_map": {"": 0}} if torch.cuda.is_available() else {}
    base = AutoModelForCausalLM.from_pretrained(checkpoint, quantization_config=quantization, **placement)
    return get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=["c_attn", "c_proj"], lora_dropout=0.05,
                                           bias="none", task_type=TaskType.CAUSAL_LM))
"""),
        ("no quant type, so the default fp4", """
def make_qlora_model(checkpoint=GPT2):
    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_use_double_quant=True,
                                      bnb_4bit_compute_dtype=pick_compute_dtype())
    placement = {"device_map": {"": 0}} if torch.cuda.is_available() else {}
    base = prepare_model_for_kbit_training(
        AutoModelForCausalLM.from_pretrained(checkpoint, quantization_config=quantization, **placement))
    return get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=["c_attn", "c_proj"], lora_dropout=0.05,
                                           bias="none", task_type=TaskType.CAUSAL_LM))
"""),
        ("double quantization left off", """
def make_qlora_model(checkpoint=GPT2):
    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                      bnb_4bit_compute_dtype=pick_compute_dtype())
    placement = {"device_map": {"": 0}} if torch.cuda.is_available() else {}
    base = prepare_model_for_kbit_training(
        AutoModelForCausalLM.from_pretrained(checkpoint, quantization_config=quantization, **placement))
    return get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=["c_attn", "c_proj"], lora_dropout=0.05,
                                           bias="none", task_type=TaskType.CAUSAL_LM))
"""),
        ("LoRA on c_attn only (Exercise 3's target), not Exercise 4's config", """
def make_qlora_model(checkpoint=GPT2):
    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                      bnb_4bit_compute_dtype=pick_compute_dtype())
    placement = {"device_map": {"": 0}} if torch.cuda.is_available() else {}
    base = prepare_model_for_kbit_training(
        AutoModelForCausalLM.from_pretrained(checkpoint, quantization_config=quantization, **placement))
    return get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=["c_attn"], lora_dropout=0.05,
                                           bias="none", task_type=TaskType.CAUSAL_LM))
"""),
    ],
    "count_parameters": [
        ("PEFT's count: a method plain modules do not have", """
def count_parameters(model):
    return tuple(model.get_nb_trainable_parameters())
"""),
        ("numel() of the packed 4-bit weights taken as their number of weights", """
def count_parameters(model):
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
"""),
        ("numel() doubled for uint8 weights: wrong for other storage dtypes and half-empty last bytes", """
def count_parameters(model):
    trainable = total = 0
    for p in model.parameters():
        n = 2 * p.numel() if p.dtype == torch.uint8 else p.numel()
        total += n
        trainable += n if p.requires_grad else 0
    return trainable, total
"""),
        ("layers' weights summed module by module: a tied matrix counted twice", """
def count_parameters(model):
    trainable = total = 0
    for m in model.modules():
        for p in m.parameters(recurse=False):
            n = m.in_features * m.out_features if isinstance(m, bnb.nn.Linear4bit) and p is m.weight else p.numel()
            total += n
            trainable += n if p.requires_grad else 0
    return trainable, total
"""),
        ("every parameter counted as trainable", """
def count_parameters(model):
    numbers = {id(m.weight): m.in_features * m.out_features for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)}
    total = sum(numbers.get(id(p), p.numel()) for p in model.parameters())
    return total, total
"""),
    ],
    "qlora_step_peak": [  # graded on a GPU only
        ("what the steps keep allocated (measured.kept), not their peak", """
def qlora_step_peak(batch):
    with measure_cuda_memory() as measured:
        net = make_qlora_model()
        optimizer = make_optimizer(net)
        train_step(net, batch, optimizer)
        torch.cuda.reset_peak_memory_stats()
        train_step(net, batch, optimizer)
    del net, optimizer
    return measured.kept
"""),
        ("LoRA on a float32 base instead of the 4-bit one", """
def qlora_step_peak(batch):
    with measure_cuda_memory() as measured:
        net = get_peft_model(AutoModelForCausalLM.from_pretrained(GPT2).to("cuda"),
                             LoraConfig(r=8, lora_alpha=16, target_modules=["c_attn", "c_proj"], lora_dropout=0.05,
                                        bias="none", task_type=TaskType.CAUSAL_LM))
        optimizer = make_optimizer(net)
        train_step(net, batch, optimizer)
        torch.cuda.reset_peak_memory_stats()
        train_step(net, batch, optimizer)
        del net, optimizer
    return measured.peak
"""),
        ("absolute max_memory_allocated(): memory in use before the load counted too", """
def qlora_step_peak(batch):
    net = make_qlora_model()
    optimizer = make_optimizer(net)
    train_step(net, batch, optimizer)
    torch.cuda.reset_peak_memory_stats()
    train_step(net, batch, optimizer)
    peak = torch.cuda.max_memory_allocated()
    del net, optimizer
    return peak
"""),
    ],
}

ALTERNATIVE = {
    "config_8bit": '''
config_8bit = BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=6.0, llm_int8_skip_modules=["lm_head"])
''',
    "config_4bit": '''
if supports_bf16():
    compute_dtype = torch.bfloat16
elif torch.cuda.is_available():
    compute_dtype = torch.float16
else:
    compute_dtype = torch.float32
config_4bit = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute_dtype)
''',
    "load_quantized": '''
def load_quantized(config=None):
    if config is None:  # plain weights can be moved after loading
        return AutoModelForCausalLM.from_pretrained(gpt2_source()).to("cuda" if torch.cuda.is_available() else "cpu")
    where = {"": torch.cuda.current_device()} if torch.cuda.is_available() else None
    return AutoModelForCausalLM.from_pretrained(gpt2_source(), quantization_config=config, device_map=where)
''',
    "expected_weight_bytes": '''
def expected_weight_bytes(config, quantization=None):
    # count numbers by storage: float32 (4 bytes), int8 (1 byte), packed 4-bit (two numbers a byte)
    width, inner = config.n_embd, config.n_inner if config.n_inner is not None else 4 * config.n_embd
    blocks = {"c_attn": width * 3 * width, "attn.c_proj": width * width, "mlp.c_fc": width * inner,
              "mlp.c_proj": inner * width}
    out_widths = 3 * width + width + inner + width
    float32 = config.vocab_size * width + config.n_positions * width + 2 * width
    float32 += config.n_layer * (out_widths + 4 * width)
    low_bits = 0
    skip = tuple(getattr(quantization, "llm_int8_skip_modules", None) or ())
    if config.tie_word_embeddings is False:  # transformers' default skip of lm_head applies only to a None list
        own_list = quantization is not None and quantization.llm_int8_skip_modules is not None
        if own_list and not "lm_head".endswith(skip):
            low_bits += config.vocab_size * width * (8 if quantization.load_in_8bit else 4)
        else:
            float32 += config.vocab_size * width
    for name, numbers in blocks.items():
        if quantization is not None and not name.endswith(skip):
            low_bits += config.n_layer * numbers * (8 if quantization.load_in_8bit else 4)
        else:
            float32 += config.n_layer * numbers
    return float32 * 4 + low_bits // 8
''',
    "measure_load_memory": '''
def measure_load_memory(config=None):
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    net = load_quantized(config)
    torch.cuda.synchronize()
    used = torch.cuda.memory_allocated() - before
    del net
    return used
''',
    "make_qlora_model": """
def make_qlora_model(checkpoint=GPT2):
    settings = dict(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=pick_compute_dtype(),
                    bnb_4bit_use_double_quant=True)
    where = {"": torch.cuda.current_device()} if torch.cuda.is_available() else None
    model = AutoModelForCausalLM.from_pretrained(checkpoint, quantization_config=BitsAndBytesConfig(**settings),
                                                 device_map=where)
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    config = LoraConfig(task_type="CAUSAL_LM", r=8, lora_alpha=16, lora_dropout=0.05,
                        target_modules=["attn.c_attn", "attn.c_proj", "mlp.c_proj"])
    return get_peft_model(model, config)
""",
    "count_parameters": """
def count_parameters(model):
    trainable = total = 0
    for p in model.parameters():
        # a bitsandbytes 4-bit weight keeps the shape it packs in its quant_state
        n = p.quant_state.shape.numel() if isinstance(p, bnb.nn.Params4bit) else p.numel()
        total += n
        if p.requires_grad:
            trainable += n
    return trainable, total
""",
    "qlora_step_peak": """
def qlora_step_peak(batch):
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    net = make_qlora_model()
    optimizer = make_optimizer(net)
    train_step(net, batch, optimizer)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    train_step(net, batch, optimizer)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - before
    del net, optimizer
    return peak
""",
}
