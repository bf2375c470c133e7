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
        ("embeddings quantized too: every number at the quantized width", '''
def expected_weight_bytes(model):
    kinds = {type(m) for m in model.modules()}
    bytes_per_number = 1 if bnb.nn.Linear8bitLt in kinds else 0.5 if bnb.nn.Linear4bit in kinds else 4
    numbers = sum(m.in_features * m.out_features for m in model.modules()
                  if isinstance(m, (bnb.nn.Linear8bitLt, bnb.nn.Linear4bit)))
    numbers += sum(p.numel() for p in model.parameters() if p.dtype.is_floating_point)
    return numbers * bytes_per_number
'''),
        ("biases forgotten: only tensors called weight", '''
def expected_weight_bytes(model):
    total = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear8bitLt):
            total += module.in_features * module.out_features
        elif isinstance(module, bnb.nn.Linear4bit):
            total += module.in_features * module.out_features / 2
    for name, p in model.named_parameters():
        if name.endswith("weight") and p.dtype.is_floating_point:
            total += p.numel() * p.element_size()
    return total
'''),
        ("packed 4-bit numel() taken as numbers, then halved again", '''
def expected_weight_bytes(model):
    total = 0
    for p in model.parameters():
        if p.dtype == torch.int8:
            total += p.numel()
        elif p.dtype == torch.uint8:
            total += p.numel() * 0.5
        else:
            total += p.numel() * p.element_size()
    return total
'''),
    ],
    "memory_footprints": [
        ("numbers typed in from the printout", '''
def memory_footprints(models):
    return {"fp32": 497_759_232, "int8": 242_955_264, "nf4": 200_487_936}
'''),
        ("parameter counts instead of bytes", '''
def memory_footprints(models):
    return {name: net.num_parameters() for name, net in models.items()}
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
        ("every parameter counted as trainable", """
def count_parameters(model):
    numbers = {id(m.weight): m.in_features * m.out_features for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)}
    total = sum(numbers.get(id(p), p.numel()) for p in model.parameters())
    return total, total
"""),
        ("numel() of the packed 4-bit weights taken as their number of weights", """
def count_parameters(model):
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
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
def expected_weight_bytes(model):
    bits = {bnb.nn.Linear8bitLt: 8, bnb.nn.Linear4bit: 4}
    quantized = {id(m.weight): m.in_features * m.out_features * bits[type(m)] / 8
                 for m in model.modules() if type(m) in bits}
    tensors = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    return sum(quantized.get(key, t.numel() * t.element_size()) for key, t in tensors.items())
''',
    "memory_footprints": '''
from utils import parameter_bytes


def memory_footprints(models):
    return {name: parameter_bytes(net) for name, net in models.items()}  # parameters and buffers, as stored
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
    trainable, total = model.get_nb_trainable_parameters()  # PEFT unpacks 4-bit weights itself
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
