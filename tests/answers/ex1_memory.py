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
}
