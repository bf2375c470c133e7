"""Exercise 4: realistic wrong answers (each must lose exactly its own test cells' points) and correct
answers written differently (each must keep full marks). Every answer here is CPU-gradable."""

WRONG = {
    "lora_config": [
        ("attention's fused QKV only: target_modules=['c_attn']", '''
lora_config = LoraConfig(r=8, lora_alpha=16, target_modules=["c_attn"], lora_dropout=0.05, bias="none",
                         task_type=TaskType.CAUSAL_LM)
'''),
        ("r and lora_alpha swapped", '''
lora_config = LoraConfig(r=16, lora_alpha=8, target_modules=["c_attn", "c_proj"], lora_dropout=0.05, bias="none",
                         task_type=TaskType.CAUSAL_LM)
'''),
        ("task_type left out", '''
lora_config = LoraConfig(r=8, lora_alpha=16, target_modules=["c_attn", "c_proj"], lora_dropout=0.05, bias="none")
'''),
        # peft_model, built from this config, must keep its point: it is what get_peft_model makes of it.
        ("bias='all': every bias of GPT-2 trains too", '''
lora_config = LoraConfig(r=8, lora_alpha=16, target_modules=["c_attn", "c_proj"], lora_dropout=0.05, bias="all",
                         task_type=TaskType.CAUSAL_LM)
'''),
    ],
    "peft_model": [
        ("a new config written inline instead of lora_config (PEFT then defaults to c_attn)", '''
peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, task_type="CAUSAL_LM"))
peft_model.print_trainable_parameters()
'''),
        ("unfreezes everything 'to make sure it trains'", '''
peft_model = get_peft_model(model, lora_config)
for p in peft_model.parameters():
    p.requires_grad = True
peft_model.print_trainable_parameters()
'''),
    ],
    "lora_param_count": [
        ("counts a full d_in x d_out matrix per target: r * d_in * d_out", '''
from transformers.pytorch_utils import Conv1D


def lora_param_count(model, target_modules, r):
    total = 0
    for name, module in model.named_modules():
        if isinstance(module, (Conv1D, torch.nn.Linear)) and any(name.endswith(t) for t in target_modules):
            d_in, d_out = module.weight.shape
            total += r * d_in * d_out
    return total
'''),
        ("substring match: `target in name`", '''
from transformers.pytorch_utils import Conv1D


def lora_param_count(model, target_modules, r):
    total = 0
    for name, module in model.named_modules():
        if isinstance(module, (Conv1D, torch.nn.Linear)) and any(t in name for t in target_modules):
            total += r * sum(module.weight.shape)
    return total
'''),
        ("suffix test without the dot: `name.endswith(target)` (\"proj\" would match c_proj)", '''
from transformers.pytorch_utils import Conv1D


def lora_param_count(model, target_modules, r):
    total = 0
    for name, module in model.named_modules():
        if isinstance(module, (Conv1D, torch.nn.Linear)) and any(name.endswith(t) for t in target_modules):
            total += r * sum(module.weight.shape)
    return total
'''),
        ("suffix with the dot but no equal name: a top-level target such as lm_head is missed", '''
from transformers.pytorch_utils import Conv1D


def lora_param_count(model, target_modules, r):
    total = 0
    for name, module in model.named_modules():
        if isinstance(module, (Conv1D, torch.nn.Linear)) and any(name.endswith("." + t) for t in target_modules):
            total += r * sum(module.weight.shape)
    return total
'''),
        ("the library shortcut: PEFT wraps a copy and counts (get_nb_trainable_parameters)", '''
def lora_param_count(model, target_modules, r):
    wrapped = get_peft_model(copy.deepcopy(model), LoraConfig(r=r, target_modules=list(target_modules)))
    return wrapped.get_nb_trainable_parameters()[0]
'''),
        ("only nn.Linear counted: GPT-2's Conv1D layers forgotten", '''
def lora_param_count(model, target_modules, r):
    total = 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            if any(name == t or name.endswith("." + t) for t in target_modules):
                total += r * (module.in_features + module.out_features)
    return total
'''),
    ],
    "attention_only_targets": [
        ("the trap: c_proj taken for attention's projection", '''
attention_only_targets = ["c_attn", "c_proj"]
'''),
        ("the output projection forgotten", '''
attention_only_targets = ["c_attn"]
'''),
        ("Llama's module names, which GPT-2 does not have", '''
attention_only_targets = ["q_proj", "k_proj", "v_proj", "o_proj"]
'''),
    ],
    "merge_adapter": [
        ("merges the original: merge_and_unload on peft_model itself, the adapter model is gone", '''
def merge_adapter(peft_model):
    return peft_model.merge_and_unload()
'''),
        ("get_base_model(): the model inside the wrapper, LoRA layers still in it", '''
def merge_adapter(peft_model):
    return copy.deepcopy(peft_model).get_base_model()
'''),
        ("merge_adapter() without unloading: still a PeftModel with its LoRA layers", '''
def merge_adapter(peft_model):
    merged = copy.deepcopy(peft_model)
    merged.merge_adapter()
    return merged
'''),
        ("unload() without merging: the adapter is dropped", '''
def merge_adapter(peft_model):
    return copy.deepcopy(peft_model).unload()
'''),
    ],
    "train_step": [
        ("never zeroes the gradients (they pile up from step to step)", '''
def train_step(model, batch, optimizer):
    loss = model(input_ids=batch, labels=batch).loss
    loss.backward()
    optimizer.step()
    return loss.item()
'''),
        ("own cross-entropy without shifting: predicts each token from itself", '''
import torch.nn.functional as F


def train_step(model, batch, optimizer):
    optimizer.zero_grad()
    logits = model(input_ids=batch).logits
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch.reshape(-1))
    loss.backward()
    optimizer.step()
    return loss.item()
'''),
    ],
}

ALTERNATIVE = {
    "lora_config": '''
lora_config = LoraConfig(task_type="CAUSAL_LM", target_modules={"c_proj", "c_attn"}, lora_alpha=16, r=8,
                         lora_dropout=0.05)  # bias="none" is the default
''',
    "peft_model": '''
from peft import PeftModelForCausalLM

peft_model = PeftModelForCausalLM(model, lora_config)
''',
    "lora_param_count": '''
def lora_param_count(model, target_modules, r):
    """Suffix match written as one test on dotted names; shapes summed, so orientation does not matter."""
    wanted = ["." + t for t in target_modules]
    linear_kinds = {"Linear", "Conv1D"}
    return sum(r * sum(module.weight.shape)
               for name, module in model.named_modules()
               if type(module).__name__ in linear_kinds and any(("." + name).endswith(w) for w in wanted))
''',
    "attention_only_targets": '''
attention_only_targets = r".*\\.attn\\.c_(attn|proj)"  # a regex: PEFT full-matches it against each module name
''',
    "merge_adapter": '''
def merge_adapter(peft_model):
    """Fold the adapter in on a copy, in two steps: merge the weights, then drop the LoRA layers."""
    twin = copy.deepcopy(peft_model)
    twin.merge_adapter()
    return twin.unload()
''',
    "train_step": '''
import torch.nn.functional as F


def train_step(model, batch, optimizer):
    logits = model(input_ids=batch).logits
    # position t predicts token t+1
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    return float(loss.detach())
''',
}
