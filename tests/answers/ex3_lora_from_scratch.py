"""Realistic wrong answers and alternative right ones for Exercise 3 (LoRA from scratch).

Each source replaces the whole solution cell. A wrong answer must lose exactly its own test cells'
points; an alternative must keep full marks."""

# ----------------------------------------------------------------------------- LoRALinear
_LORA_NO_FREEZE = '''
class LoRALinear(nn.Module):
    def __init__(self, base, r=8, alpha=16):
        super().__init__()
        self.base = base
        d_in, d_out = in_out_features(base)
        self.A = nn.Parameter(torch.randn(r, d_in) * 0.01)
        self.B = nn.Parameter(torch.zeros(d_out, r))
        self.scale = alpha / r

    def forward(self, x):
        return self.base(x) + (x @ self.A.T @ self.B.T) * self.scale
'''

_LORA_INIT_SWAPPED = '''
class LoRALinear(nn.Module):
    def __init__(self, base, r=8, alpha=16):
        super().__init__()
        self.base = base
        for p in self.base.parameters():
            p.requires_grad = False
        d_in, d_out = in_out_features(base)
        self.A = nn.Parameter(torch.zeros(r, d_in))
        self.B = nn.Parameter(torch.randn(d_out, r) * 0.01)
        self.scale = alpha / r

    def forward(self, x):
        return self.base(x) + (x @ self.A.T @ self.B.T) * self.scale
'''

_LORA_SCALE_INVERTED = '''
class LoRALinear(nn.Module):
    def __init__(self, base, r=8, alpha=16):
        super().__init__()
        self.base = base
        for p in self.base.parameters():
            p.requires_grad = False
        d_in, d_out = in_out_features(base)
        self.A = nn.Parameter(torch.randn(r, d_in) * 0.01)
        self.B = nn.Parameter(torch.zeros(d_out, r))
        self.scale = r / alpha

    def forward(self, x):
        return self.base(x) + (x @ self.A.T @ self.B.T) * self.scale
'''

_LORA_NO_SCALE_IN_FORWARD = '''
class LoRALinear(nn.Module):
    def __init__(self, base, r=8, alpha=16):
        super().__init__()
        self.base = base
        for p in self.base.parameters():
            p.requires_grad = False
        d_in, d_out = in_out_features(base)
        self.A = nn.Parameter(torch.randn(r, d_in) * 0.01)
        self.B = nn.Parameter(torch.zeros(d_out, r))
        self.scale = alpha / r

    def forward(self, x):
        return self.base(x) + x @ self.A.T @ self.B.T
'''

_LORA_A_TRANSPOSED = '''
class LoRALinear(nn.Module):
    def __init__(self, base, r=8, alpha=16):
        super().__init__()
        self.base = base
        for p in self.base.parameters():
            p.requires_grad = False
        d_in, d_out = in_out_features(base)
        self.A = nn.Parameter(torch.randn(d_in, r) * 0.01)  # (d_in, r) instead of (r, d_in)
        self.B = nn.Parameter(torch.zeros(d_out, r))
        self.scale = alpha / r

    def forward(self, x):
        return self.base(x) + (x @ self.A @ self.B.T) * self.scale
'''

_LORA_BASE_ONLY = '''
class LoRALinear(nn.Module):
    def __init__(self, base, r=8, alpha=16):
        super().__init__()
        self.base = base
        for p in self.base.parameters():
            p.requires_grad = False
        d_in, d_out = in_out_features(base)
        self.A = nn.Parameter(torch.randn(r, d_in) * 0.01)
        self.B = nn.Parameter(torch.zeros(d_out, r))
        self.scale = alpha / r

    def forward(self, x):
        return self.base(x)  # right while B = 0, and only then
'''

_LORA_ALTERNATIVE = '''
import math
import torch.nn.functional as F


class LoRALinear(nn.Module):
    """Written the way PEFT does it: nn.init calls and two F.linear projections."""

    def __init__(self, base, r=8, alpha=16):
        super().__init__()
        self.base = base
        base.weight.requires_grad_(False)
        if base.bias is not None:
            base.bias.requires_grad_(False)
        d_in, d_out = in_out_features(base)
        self.r, self.alpha = r, alpha
        self.A = nn.Parameter(torch.empty(r, d_in))
        self.B = nn.Parameter(torch.empty(d_out, r))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
        nn.init.zeros_(self.B)
        self.scale = float(alpha) / float(r)

    def forward(self, x):
        down = F.linear(x, self.A)  # x @ A^T: d_in -> r
        up = F.linear(down, self.B)  # ... @ B^T: r -> d_out
        return self.base(x) + self.scale * up
'''

# ----------------------------------------------------------------------------- add_lora_to_gpt2
_ADD_ATTACHED_UNUSED = '''
def add_lora_to_gpt2(model, r=8, alpha=16):
    # The old notebook's bug: parameters hung on the block, never used by its forward pass.
    for p in model.parameters():
        p.requires_grad = False
    for block in model.transformer.h:
        d_in, d_out = in_out_features(block.attn.c_attn)
        block.attn.lora_A = nn.Parameter(torch.randn(r, d_in) * 0.01)
        block.attn.lora_B = nn.Parameter(torch.zeros(d_out, r))
        block.attn.lora_scale = alpha / r
    return model
'''

_ADD_WRAPS_C_PROJ = '''
def add_lora_to_gpt2(model, r=8, alpha=16):
    for p in model.parameters():
        p.requires_grad = False
    for block in model.transformer.h:
        block.attn.c_proj = LoRALinear(block.attn.c_proj, r=r, alpha=alpha)
    return model
'''

_ADD_REST_NOT_FROZEN = '''
def add_lora_to_gpt2(model, r=8, alpha=16):
    for block in model.transformer.h:
        block.attn.c_attn = LoRALinear(block.attn.c_attn, r=r, alpha=alpha)
    return model
'''

_ADD_PEFT = '''
from peft import LoraConfig, get_peft_model


def add_lora_to_gpt2(model, r=8, alpha=16):
    # The library's LoRA, not the notebook's LoRALinear: c_attn becomes peft's own layer.
    config = LoraConfig(r=r, lora_alpha=alpha, target_modules=["c_attn"], fan_in_fan_out=True)
    return get_peft_model(model, config)
'''

_ADD_ALTERNATIVE = '''
def add_lora_to_gpt2(model, r=8, alpha=16):
    model.requires_grad_(False)
    targets = [name for name, _ in model.named_modules() if name.endswith("attn.c_attn")]
    for name in targets:
        parent_name, child = name.rsplit(".", 1)
        parent = model.get_submodule(parent_name)
        setattr(parent, child, LoRALinear(getattr(parent, child), r, alpha))
    return model
'''

# ----------------------------------------------------------------------------- merge_lora
_MERGE_NO_SCALE = '''
def merge_lora(layer):
    merged = copy.deepcopy(layer.base)
    delta = layer.B @ layer.A
    if isinstance(merged, Conv1D):
        delta = delta.T
    with torch.no_grad():
        merged.weight += delta
    return merged
'''

_MERGE_NO_TRANSPOSE = '''
def merge_lora(layer):
    merged = copy.deepcopy(layer.base)
    with torch.no_grad():
        merged.weight += (layer.B @ layer.A) * layer.scale
    return merged
'''

_MERGE_KEEPS_LORA_PATH = '''
def merge_lora(layer):
    # Folds the update into the base weight but returns the LoRA layer: the detour now counts twice.
    delta = (layer.B @ layer.A) * layer.scale
    if isinstance(layer.base, Conv1D):
        delta = delta.T
    with torch.no_grad():
        layer.base.weight += delta
    return layer
'''

_MERGE_IN_PLACE = '''
def merge_lora(layer):
    # Right weights, but merged into the LoRA layer's own base: the trained LoRA layer now adds its update twice.
    delta = (layer.B @ layer.A) * layer.scale
    if isinstance(layer.base, Conv1D):
        delta = delta.T
    with torch.no_grad():
        layer.base.weight += delta
    return layer.base
'''

_MERGE_ALTERNATIVE = '''
def merge_lora(layer):
    """Builds a fresh layer and copies the merged weight into it."""
    base = layer.base
    with torch.no_grad():
        delta = layer.scale * torch.einsum("or,ri->oi", layer.B, layer.A)
        if isinstance(base, Conv1D):
            merged = Conv1D(base.nf, base.nx)
            merged.weight.copy_(base.weight + delta.T)
            merged.bias.copy_(base.bias)
        else:
            merged = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None)
            merged.weight.copy_(base.weight + delta)
            if base.bias is not None:
                merged.bias.copy_(base.bias)
    return merged.to(base.weight.device)
'''

WRONG = {
    "LoRALinear": [
        ("base not frozen", _LORA_NO_FREEZE),
        ("A and B initialisations swapped", _LORA_INIT_SWAPPED),
        ("scale = r / alpha", _LORA_SCALE_INVERTED),
        ("no scale in forward", _LORA_NO_SCALE_IN_FORWARD),
        ("forward returns base(x) alone", _LORA_BASE_ONLY),
        ("A shaped (d_in, r)", _LORA_A_TRANSPOSED),
    ],
    "add_lora_to_gpt2": [
        ("parameters attached but unused in forward", _ADD_ATTACHED_UNUSED),
        ("wraps c_proj instead of c_attn", _ADD_WRAPS_C_PROJ),
        ("rest of GPT-2 not frozen", _ADD_REST_NOT_FROZEN),
        ("peft's get_peft_model instead of LoRALinear", _ADD_PEFT),
    ],
    "merge_lora": [
        ("no scale", _MERGE_NO_SCALE),
        ("no transpose for Conv1D", _MERGE_NO_TRANSPOSE),
        ("keeps the LoRA path too", _MERGE_KEEPS_LORA_PATH),
        ("merges in place into layer.base (right weights, `layer` changed)", _MERGE_IN_PLACE),
    ],
}

ALTERNATIVE = {
    "LoRALinear": _LORA_ALTERNATIVE,
    "add_lora_to_gpt2": _ADD_ALTERNATIVE,
    "merge_lora": _MERGE_ALTERNATIVE,
}
