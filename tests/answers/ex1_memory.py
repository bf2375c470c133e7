"""Exercise 1: realistic wrong answers (each must lose exactly its own test cells' points) and correct
answers written differently (each must keep full marks)."""

WRONG = {
    "bytes_per_param": [
        ("int4 as one byte, the smallest thing memory can address", '''
def bytes_per_param(dtype):
    sizes = {"float32": 4, "float16": 2, "bfloat16": 2, "int8": 1, "int4": 1}
    if dtype not in sizes:
        raise ValueError(f"unknown dtype {dtype!r}")
    return sizes[dtype]
'''),
        ("bits instead of bytes", '''
def bytes_per_param(dtype):
    sizes = {"float32": 32, "float16": 16, "bfloat16": 16, "int8": 8, "int4": 4}
    if dtype not in sizes:
        raise ValueError(f"unknown dtype {dtype!r}")
    return sizes[dtype]
'''),
        ("unknown dtype silently becomes None (dict.get)", '''
def bytes_per_param(dtype):
    return {"float32": 4, "float16": 2, "bfloat16": 2, "int8": 1, "int4": 0.5}.get(dtype)
'''),
        ("int4 by integer division: 4 // 8 == 0", '''
def bytes_per_param(dtype):
    bits = {"float32": 32, "float16": 16, "bfloat16": 16, "int8": 8, "int4": 4}
    if dtype not in bits:
        raise ValueError(f"unknown dtype {dtype!r}")
    return bits[dtype] // 8
'''),
        ("the library shortcut: torch's dtype itemsize (int4 takes a whole byte there; unknown names raise "
         "AttributeError)", '''
import torch

def bytes_per_param(dtype):
    return getattr(torch, dtype).itemsize
'''),
        ("an unknown dtype raises ValueError, but the message does not say which", '''
def bytes_per_param(dtype):
    sizes = {"float32": 4, "float16": 2, "bfloat16": 2, "int8": 1, "int4": 0.5}
    if dtype not in sizes:
        raise ValueError("unknown dtype")
    return sizes[dtype]
'''),
    ],
    "memory_for_inference": [
        ("returns GB instead of bytes", '''
def memory_for_inference(num_params, dtype="float16"):
    return num_params * bytes_per_param(dtype) / 1e9
'''),
        ("default dtype float32", '''
def memory_for_inference(num_params, dtype="float32"):
    return num_params * bytes_per_param(dtype)
'''),
        ("counts bits (multiplies by 8)", '''
def memory_for_inference(num_params, dtype="float16"):
    return num_params * bytes_per_param(dtype) * 8
'''),
    ],
    "to_gb": [
        ("GiB (2**30) instead of decimal GB", '''
def to_gb(num_bytes):
    return num_bytes / 2**30
'''),
        ("floor division drops the decimals", '''
def to_gb(num_bytes):
    return num_bytes // 1e9
'''),
        ("divides by 1e6 (that is MB)", '''
def to_gb(num_bytes):
    return num_bytes / 1e6
'''),
    ],
    "memory_for_training": [
        ("Adam states in bf16 like the weights (8 bytes/param)", '''
def memory_for_training(num_params):
    parts = {"weights_bf16": 2 * num_params, "gradients_bf16": 2 * num_params,
             "adam_momentum": 2 * num_params, "adam_variance": 2 * num_params}
    parts["total"] = sum(parts.values())
    return parts
'''),
        ("forgets the gradients in the total", '''
def memory_for_training(num_params):
    weights = 2 * num_params
    gradients = 2 * num_params
    momentum = 4 * num_params
    variance = 4 * num_params
    return {"weights_bf16": weights, "gradients_bf16": gradients, "adam_momentum": momentum,
            "adam_variance": variance, "total": weights + momentum + variance}
'''),
        ("adds a float32 master copy (16 bytes/param, the old notebook's model)", '''
def memory_for_training(num_params):
    parts = {"weights_bf16": 2 * num_params, "gradients_bf16": 2 * num_params,
             "adam_momentum": 4 * num_params, "adam_variance": 4 * num_params}
    master_fp32 = 4 * num_params
    parts["total"] = sum(parts.values()) + master_fp32
    return parts
'''),
        ("gradients in float32", '''
def memory_for_training(num_params):
    parts = {"weights_bf16": 2 * num_params, "gradients_bf16": 4 * num_params,
             "adam_momentum": 4 * num_params, "adam_variance": 4 * num_params}
    parts["total"] = sum(parts.values())
    return parts
'''),
    ],
    "nf4_bits_per_param": [
        ("double quantization without the float32 constants of the 8-bit scales", '''
def nf4_bits_per_param(double_quant=True, block_size=64, scale_block_size=256):
    if double_quant:
        return 4 + 8 / block_size
    return 4 + 32 / block_size
'''),
        ("ignores double_quant: always one float32 scale per block", '''
def nf4_bits_per_param(double_quant=True, block_size=64, scale_block_size=256):
    return 4 + 32 / block_size
'''),
        ("hard-codes the lesson's block sizes", '''
def nf4_bits_per_param(double_quant=True, block_size=64, scale_block_size=256):
    return 4 + 8 / 64 + 32 / (64 * 256) if double_quant else 4.5
'''),
        ("returns bytes, not bits", '''
def nf4_bits_per_param(double_quant=True, block_size=64, scale_block_size=256):
    bits = 4 + (8 / block_size + 32 / (block_size * scale_block_size) if double_quant else 32 / block_size)
    return bits / 8
'''),
    ],
    "memory_for_finetuning": [
        ("LoRA's frozen base still gets gradients", '''
def memory_for_finetuning(num_params, method, adapter_params=0, double_quant=True):
    if method == "full":
        base, adapter = memory_for_training(num_params)["total"], 0
    elif method == "lora":
        base = 2 * num_params + 2 * num_params  # bf16 weights and gradients
        adapter = memory_for_training(adapter_params)["total"]
    elif method == "qlora":
        base = num_params * nf4_bits_per_param(double_quant) / 8
        adapter = memory_for_training(adapter_params)["total"]
    else:
        raise ValueError(method)
    return {"base": base, "adapter": adapter, "total": base + adapter}
'''),
        ("the adapter counted as weights only (2 bytes, no gradients or Adam states)", '''
def memory_for_finetuning(num_params, method, adapter_params=0, double_quant=True):
    if method == "full":
        return {"base": memory_for_training(num_params)["total"], "adapter": 0,
                "total": memory_for_training(num_params)["total"]}
    if method == "lora":
        base = memory_for_inference(num_params, "bfloat16")
    elif method == "qlora":
        base = num_params * nf4_bits_per_param(double_quant) / 8
    else:
        raise ValueError(method)
    adapter = memory_for_inference(adapter_params, "bfloat16")
    return {"base": base, "adapter": adapter, "total": base + adapter}
'''),
        ("QLoRA's base at int4's half byte, forgetting the block scales", '''
def memory_for_finetuning(num_params, method, adapter_params=0, double_quant=True):
    if method == "full":
        base, adapter = memory_for_training(num_params)["total"], 0
    elif method in ("lora", "qlora"):
        base = memory_for_inference(num_params, "bfloat16" if method == "lora" else "int4")
        adapter = memory_for_training(adapter_params)["total"]
    else:
        raise ValueError(method)
    return {"base": base, "adapter": adapter, "total": base + adapter}
'''),
        ("QLoRA's base in bits (forgets the / 8)", '''
def memory_for_finetuning(num_params, method, adapter_params=0, double_quant=True):
    if method == "full":
        base, adapter = memory_for_training(num_params)["total"], 0
    elif method == "lora":
        base, adapter = memory_for_inference(num_params, "bfloat16"), memory_for_training(adapter_params)["total"]
    elif method == "qlora":
        base, adapter = num_params * nf4_bits_per_param(double_quant), memory_for_training(adapter_params)["total"]
    else:
        raise ValueError(method)
    return {"base": base, "adapter": adapter, "total": base + adapter}
'''),
        ("the adapter priced once before the methods part ways: full finetuning gets one when adapter_params is "
         "passed", '''
def memory_for_finetuning(num_params, method, adapter_params=0, double_quant=True):
    adapter = memory_for_training(adapter_params)["total"]
    if method == "full":
        base = memory_for_training(num_params)["total"]
    elif method == "lora":
        base = memory_for_inference(num_params, "bfloat16")
    elif method == "qlora":
        base = num_params * nf4_bits_per_param(double_quant) / 8
    else:
        raise ValueError(f"unknown method {method!r}")
    return {"base": base, "adapter": adapter, "total": base + adapter}
'''),
        ("an unknown method raises, but the message does not say which", '''
def memory_for_finetuning(num_params, method, adapter_params=0, double_quant=True):
    frozen = {"lora": 2, "qlora": nf4_bits_per_param(double_quant) / 8}
    if method == "full":
        return {"base": memory_for_training(num_params)["total"], "adapter": 0,
                "total": memory_for_training(num_params)["total"]}
    if method not in frozen:
        raise ValueError("method must be 'full', 'lora' or 'qlora'")
    base, adapter = num_params * frozen[method], memory_for_training(adapter_params)["total"]
    return {"base": base, "adapter": adapter, "total": base + adapter}
'''),
    ],
}

ALTERNATIVE = {
    "bytes_per_param": '''
def bytes_per_param(dtype):
    # from the bit width, through if/elif; KeyError is an accepted error for an unknown dtype
    if dtype == "float32":
        bits = 32
    elif dtype in ("float16", "bfloat16"):
        bits = 16
    elif dtype == "int8":
        bits = 8
    elif dtype == "int4":
        bits = 4
    else:
        raise KeyError(f"no size known for dtype {dtype}")
    return bits / 8
''',
    "memory_for_inference": '''
import math

def memory_for_inference(num_params, dtype="float16"):
    # whole bytes: an odd number of packed int4 weights still occupies its last byte
    return math.ceil(num_params * bytes_per_param(dtype))
''',
    "to_gb": '''
def to_gb(num_bytes):
    GB = 10 ** 9
    return float(num_bytes) / GB
''',
    "memory_for_training": '''
def memory_for_training(num_params):
    # built from bytes_per_param, float results, dict comprehension
    layout = {"weights_bf16": "bfloat16", "gradients_bf16": "bfloat16",
              "adam_momentum": "float32", "adam_variance": "float32"}
    parts = {name: float(num_params) * bytes_per_param(dtype) for name, dtype in layout.items()}
    return {**parts, "total": sum(parts.values())}
''',
    "nf4_bits_per_param": '''
from fractions import Fraction

def nf4_bits_per_param(double_quant=True, block_size=64, scale_block_size=256):
    # the bits of one block of weights (scales included), divided by the weights in it; an exact Fraction
    if double_quant:
        block_bits = 4 * block_size + 8 + Fraction(32, scale_block_size)
    else:
        block_bits = 4 * block_size + 32
    return Fraction(block_bits) / block_size
''',
    "memory_for_finetuning": '''
def memory_for_finetuning(num_params, method, adapter_params=0, double_quant=True):
    # a table of bytes per frozen parameter; KeyError for an unknown method; ints where they are exact
    if method == "full":
        total = memory_for_training(num_params)["total"]
        return {"base": total, "adapter": 0, "total": total, "trainable_params": num_params}
    frozen_bytes = {"lora": bytes_per_param("bfloat16"), "qlora": nf4_bits_per_param(double_quant=double_quant) / 8}
    base = float(num_params) * frozen_bytes[method]
    adapter = sum(v for k, v in memory_for_training(adapter_params).items() if k != "total")
    return {"base": base, "adapter": adapter, "total": base + adapter, "trainable_params": adapter_params}
''',
}
