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
        ("torch's symmetric MinMaxObserver: scale max|w| / 127.5", '''
from torch.ao.quantization import MinMaxObserver

def absmax_quantize(w):
    observer = MinMaxObserver(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)
    observer(w)
    scale, _ = observer.calculate_qparams()
    q = torch.quantize_per_tensor(w, float(scale), 0, torch.qint8).int_repr().clamp(-127, 127)
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
        ("torch's MinMaxObserver: its range always includes 0", '''
from torch.ao.quantization import MinMaxObserver

def zero_point_quantize(w):
    observer = MinMaxObserver(dtype=torch.qint8, qscheme=torch.per_tensor_affine)
    observer(w)
    scale, zero_point = observer.calculate_qparams()
    q = torch.quantize_per_tensor(w, float(scale), int(zero_point), torch.qint8).int_repr()
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
        ("truncates the zero point to an integer (int())", '''
def zero_point_dequantize(q, scale, zero_point):
    return (q.float() - int(zero_point)) * scale  # a fractional zero point loses its fraction
'''),
        ("integer arithmetic in int64: no overflow, but the zero point is cut to a whole number", '''
def zero_point_dequantize(q, scale, zero_point):
    shifted = q.long() - torch.as_tensor(zero_point).long()
    return shifted.float() * scale
'''),
        ("rounds the zero point to the nearest integer", '''
def zero_point_dequantize(q, scale, zero_point):
    return (q.float() - round(float(zero_point))) * scale
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
    "absmax_quantize_blocks": [
        ("one scale per tensor, repeated for every block", '''
def absmax_quantize_blocks(w, block_size=64):
    n_blocks = -(-w.numel() // block_size)
    max_abs = w.abs().max()
    scale = max_abs / 127 if max_abs > 0 else torch.tensor(1.0)
    q = torch.round(w / scale).clamp(-127, 127).to(torch.int8)
    return q, scale.repeat(n_blocks)
'''),
        ("pads the last block with zeros and returns the padded codes", '''
import torch.nn.functional as F

def absmax_quantize_blocks(w, block_size=64):
    flat = w.reshape(-1)
    flat = F.pad(flat, (0, (-flat.numel()) % block_size))
    blocks = flat.reshape(-1, block_size)
    scales = blocks.abs().amax(dim=1) / 127
    scales[scales == 0] = 1.0
    q = torch.round(blocks / scales[:, None]).clamp(-127, 127).to(torch.int8)
    return q.reshape(-1), scales
'''),
        ("drops the short last block (numel // block_size scales)", '''
def absmax_quantize_blocks(w, block_size=64):
    flat = w.reshape(-1)
    n_blocks = max(flat.numel() // block_size, 1)
    scales = torch.stack([flat[i * block_size:(i + 1) * block_size].abs().max() for i in range(n_blocks)]) / 127
    scales = torch.where(scales > 0, scales, torch.ones_like(scales))
    index = (torch.arange(flat.numel()) // block_size).clamp(max=n_blocks - 1)
    q = torch.round(flat / scales[index]).clamp(-127, 127).to(torch.int8)
    return q.reshape(w.shape), scales
'''),
        ("blocks cut within each row (the last dimension), not across the flattened tensor", '''
def absmax_quantize_blocks(w, block_size=64):
    rows = w.reshape(-1, w.shape[-1])
    q = torch.empty(rows.shape, dtype=torch.int8)
    scales = []
    for i, row in enumerate(rows):
        for start in range(0, row.numel(), block_size):
            block = row[start:start + block_size]
            scale = block.abs().max().item() / 127 or 1.0
            q[i, start:start + block_size] = torch.round(block / scale).clamp(-127, 127).to(torch.int8)
            scales.append(scale)
    return q.reshape(w.shape), torch.tensor(scales)
'''),
        ("no guard: an all-zero block gets scale 0", '''
def absmax_quantize_blocks(w, block_size=64):
    blocks = w.reshape(-1).split(block_size)
    scales = torch.stack([b.abs().max() / 127 for b in blocks])
    per_value = torch.cat([s.expand(len(b)) for s, b in zip(scales, blocks)])
    q = torch.round(w.reshape(-1) / per_value).clamp(-127, 127).to(torch.int8)
    return q.reshape(w.shape), scales
'''),
    ],
    "absmax_dequantize_blocks": [
        ("tiles the scales (repeat) instead of repeating each one block_size times", '''
def absmax_dequantize_blocks(q, scales, block_size=64):
    flat = q.reshape(-1).float()
    per_value = scales.float().repeat(block_size)[:flat.numel()]
    return (flat * per_value).reshape(q.shape)
'''),
        ("assumes whole blocks: reshape(-1, block_size)", '''
def absmax_dequantize_blocks(q, scales, block_size=64):
    blocks = q.reshape(-1, block_size).float()
    return (blocks * scales.float()[:, None]).reshape(q.shape)
'''),
        ("returns the flattened values", '''
def absmax_dequantize_blocks(q, scales, block_size=64):
    flat = q.reshape(-1).float()
    return flat * scales.float()[torch.arange(flat.numel()) // block_size]
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
    "absmax_quantize_blocks": '''
def absmax_quantize_blocks(w, block_size=64):
    # a plain loop over slices, float64 scales gathered in a list
    flat = w.reshape(-1)
    q = torch.empty(flat.numel(), dtype=torch.int8)
    scales = []
    for start in range(0, flat.numel(), block_size):
        block = flat[start:start + block_size]
        peak = float(block.abs().max())
        scale = peak / 127 if peak != 0 else 1.0
        q[start:start + block_size] = torch.clamp(torch.round(block.double() / scale), -127, 127).to(torch.int8)
        scales.append(scale)
    return q.view(w.shape), torch.tensor(scales, dtype=torch.float64)
''',
    "absmax_dequantize_blocks": '''
def absmax_dequantize_blocks(q, scales, block_size=64):
    # pad to whole blocks, multiply block by block, cut the padding off again
    flat = q.flatten().to(torch.float64)
    pad = (-flat.numel()) % block_size
    blocks = torch.cat([flat, flat.new_zeros(pad)]).view(-1, block_size)
    out = (blocks * torch.as_tensor(scales, dtype=torch.float64).view(-1, 1)).flatten()
    return out[:q.numel()].view_as(q)
''',
}
