"""Exercise 2: realistic wrong answers (each must lose exactly its own test cells' points) and correct
answers written differently (each must keep full marks)."""

WRONG = {
    "absmax_quantize": [
        ("max(w) instead of max|w|", '''
def absmax_quantize(w):
    scale = w.max() / 127
    if scale == 0:
        scale = torch.tensor(1.0)
    q = torch.round(w / scale).clamp(-127, 127).to(torch.int8)
    return q, scale
'''),
        ("truncates instead of rounding", '''
def absmax_quantize(w):
    max_abs = w.abs().max()
    scale = max_abs / 127 if max_abs > 0 else torch.tensor(1.0)
    q = (w / scale).clamp(-127, 127).to(torch.int8)  # .to(int8) cuts the fraction off
    return q, scale
'''),
        ("scale max|w|/128 and no clamp: 128 wraps to -128", '''
def absmax_quantize(w):
    max_abs = w.abs().max()
    scale = max_abs / 128 if max_abs > 0 else torch.tensor(1.0)
    q = torch.round(w / scale).to(torch.int8)
    return q, scale
'''),
        ("no guard: an all-zero tensor gives scale 0 and 0/0", '''
def absmax_quantize(w):
    scale = w.abs().max() / 127
    q = torch.round(w / scale).clamp(-127, 127).to(torch.int8)
    return q, scale
'''),
    ],
    "absmax_dequantize": [
        ("divides by the scale", '''
def absmax_dequantize(q, scale):
    return q.float() / scale
'''),
        ("converts the result back to int8", '''
def absmax_dequantize(q, scale):
    return (q.float() * scale).to(torch.int8)
'''),
        ("divides by 127 again, as if scale were max|w|", '''
def absmax_dequantize(q, scale):
    return q.float() / 127 * scale
'''),
    ],
    "zero_point_quantize": [
        ("zero point with the wrong sign", '''
def zero_point_quantize(w):
    lo, hi = w.min().item(), w.max().item()
    scale = (hi - lo) / 255 if hi > lo else (abs(lo) or 1.0)
    zero_point = round(lo / scale) - 128
    q = (torch.round(w / scale) + zero_point).clamp(-128, 127).to(torch.int8)
    return q, scale, zero_point
'''),
        ("codes 0..255 stored in int8, which wraps above 127", '''
def zero_point_quantize(w):
    lo, hi = w.min(), w.max()
    scale = (hi - lo) / 255 if hi > lo else (lo.abs() if lo != 0 else torch.tensor(1.0))
    zero_point = torch.round(-lo / scale)
    q = torch.round(w / scale + zero_point).to(torch.int8)
    return q, scale, zero_point
'''),
        ("no guard: a constant tensor gives scale 0", '''
def zero_point_quantize(w):
    lo, hi = w.min(), w.max()
    scale = (hi - lo) / 255
    zero_point = -128 - torch.round(lo / scale)
    q = (torch.round(w / scale) + zero_point).clamp(-128, 127).to(torch.int8)
    return q, scale, zero_point
'''),
        ("255 steps taken as 256", '''
def zero_point_quantize(w):
    lo, hi = w.min().item(), w.max().item()
    scale = (hi - lo) / 256 if hi > lo else (abs(lo) or 1.0)
    zero_point = -128 - round(lo / scale)
    q = (torch.round(w / scale) + zero_point).clamp(-128, 127).to(torch.int8)
    return q, scale, zero_point
'''),
    ],
    "zero_point_dequantize": [
        ("q * scale - zero_point", '''
def zero_point_dequantize(q, scale, zero_point):
    return q.float() * scale - zero_point
'''),
        ("adds the zero point instead of subtracting it", '''
def zero_point_dequantize(q, scale, zero_point):
    return (q.float() + zero_point) * scale
'''),
        ("subtracts in int8, which overflows", '''
def zero_point_dequantize(q, scale, zero_point):
    return (q - zero_point) * scale
'''),
    ],
    "query_block": [
        ("takes the key slice", '''
def query_block(model):
    n = model.config.n_embd
    return model.transformer.h[0].attn.c_attn.weight[:, n:2 * n]
'''),
        ("hard-codes GPT-2 small's 768", '''
def query_block(model):
    return model.transformer.h[0].attn.c_attn.weight[:, :768]
'''),
        ("slices rows, as for an nn.Linear weight", '''
def query_block(model):
    n = model.config.n_embd
    return model.transformer.h[0].attn.c_attn.weight[:n]
'''),
        ("the last block instead of the first", '''
def query_block(model):
    n = model.config.n_embd
    return model.transformer.h[-1].attn.c_attn.weight[:, :n]
'''),
    ],
}

ALTERNATIVE = {
    "absmax_quantize": '''
def absmax_quantize(w):
    # tensor scale, guard with torch.where, clamp through torch.clamp
    max_abs = w.abs().amax()
    scale = torch.where(max_abs > 0, max_abs / 127.0, torch.ones_like(max_abs))
    q = torch.clamp(torch.round(w / scale), min=-127, max=127).to(dtype=torch.int8)
    return q, scale
''',
    "absmax_dequantize": '''
def absmax_dequantize(q, scale):
    scale = torch.as_tensor(scale, dtype=torch.float32)
    return q.to(torch.float32).mul(scale)
''',
    "zero_point_quantize": '''
def zero_point_quantize(w):
    # the other convention: a non-integer zero point, rounded once together with w / scale
    lo, hi = w.min(), w.max()
    if hi > lo:
        scale = (hi - lo) / 255
    else:
        scale = lo.abs() if lo != 0 else torch.tensor(1.0)
    zero_point = -128 - lo / scale
    q = torch.round(w / scale + zero_point).clamp(-128, 127).to(torch.int8)
    return q, scale, zero_point
''',
    "zero_point_dequantize": '''
def zero_point_dequantize(q, scale, zero_point):
    return scale * (q.double() - float(zero_point))
''',
    "query_block": '''
def query_block(model):
    # nn.Linear orientation (out, in), width read from the weight itself
    weight = model.transformer.h[0].attn.c_attn.weight
    n_embd = weight.shape[0]
    q_part, k_part, v_part = weight.detach().split(n_embd, dim=1)
    return q_part.T.contiguous()
''',
}
