"""GPU figures for docs/gpu.md: memory, speed and agreement of GPT-2 in float32 / 8-bit / 4-bit NF4; peak
memory and step time of full finetuning, LoRA and QLoRA (Exercise 5) on the same batch; perplexity of a fixed
slice of the Shakespeare text under float32, 8-bit, NF4 and NF4 without double quantization.

    python benchmarks/gpu_figures.py [--json out.json]

Needs CUDA. Uses the same loading path as the notebooks (the real gpt2 online, the stand-in offline:
identical architecture, so memory and speed figures are the same; only the text differs)."""
import argparse
import json
import statistics
import sys
import time
import pathlib

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
from utils import gpt2_source, load_shakespeare, measure_cuda_memory, pick_compute_dtype, require_cuda  # noqa: E402
from utils.memory import free_cuda_memory  # noqa: E402
# Weights as stored: quantized linear weights at 1 or 0.5 byte, the rest at their dtype (the judge's reference).
from judges.ex5_quantized_inference import expected_weight_bytes as theoretical_bytes  # noqa: E402

NEW_TOKENS = 64


def timed_generate(model, ids):
    model.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=0)  # warm-up
    times, out = [], None
    for _ in range(3):
        torch.cuda.synchronize()
        t = time.perf_counter()
        out = model.generate(ids, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False,
                             pad_token_id=0)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return NEW_TOKENS / statistics.median(times), out[0, ids.shape[1]:]


def inference_figures():
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    source, dtype = gpt2_source(), pick_compute_dtype()
    tokenizer = AutoTokenizer.from_pretrained(source)
    ids = tokenizer("First Citizen:\nBefore we proceed any further, hear me speak.", return_tensors="pt").input_ids.cuda()
    configs = {
        "float32": None,
        "int8": BitsAndBytesConfig(load_in_8bit=True),
        "nf4": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype),
    }
    rows, reference = {}, None
    for name, config in configs.items():
        free_cuda_memory()
        with measure_cuda_memory() as mem:
            if config is None:
                model = AutoModelForCausalLM.from_pretrained(source).cuda()
            else:
                model = AutoModelForCausalLM.from_pretrained(source, quantization_config=config, device_map={"": 0})
        tokens_per_s, tokens = timed_generate(model, ids)
        reference = tokens if reference is None else reference
        rows[name] = {
            "cuda_bytes": mem.kept, "footprint_bytes": model.get_memory_footprint(),
            "theoretical_weight_bytes": theoretical_bytes(model),
            "tokens_per_s": tokens_per_s,
            "token_agreement_vs_float32": (tokens == reference).float().mean().item(),
        }
        del model
    return rows


def training_figures(batch_size=8, seq_len=128, steps=50):
    """Steady-state step of full finetuning (float32, AdamW), LoRA (float32 base, AdamW) and QLoRA (the judge's
    reference: NF4 with double quantization, prepare_model_for_kbit_training, paged 8-bit AdamW), same batch."""
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForCausalLM
    from judges.ex5_quantized_inference import qlora_model as reference_qlora_model
    from judges.ex5_quantized_inference import qlora_optimizer as reference_optimizer
    from judges.ex5_quantized_inference import train_step as reference_train_step
    batch = torch.randint(0, 4000, (batch_size, seq_len), device="cuda")
    rows = {}
    for name in ("full", "lora", "qlora"):
        free_cuda_memory()
        with measure_cuda_memory() as mem:
            if name == "qlora":
                model = reference_qlora_model()
                optimizer = reference_optimizer(model, lr=1e-4)
            else:
                model = AutoModelForCausalLM.from_pretrained(gpt2_source()).cuda()
                if name == "lora":
                    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["c_attn", "c_proj"],
                                                             lora_dropout=0.05, bias="none", task_type=TaskType.CAUSAL_LM))
                optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
            trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
            reference_train_step(model, batch, optimizer)  # allocates the optimizer states: measure the steps after
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            t = time.perf_counter()
            for _ in range(steps):
                reference_train_step(model, batch, optimizer)
            torch.cuda.synchronize()
            elapsed = time.perf_counter() - t
            del model, optimizer
        rows[name] = {"trainable_params": trainable,
                      "peak_cuda_bytes": mem.peak,  # counted from before the load, as the notebooks measure it
                      "ms_per_step": elapsed / steps * 1e3,
                      "optimizer": "PagedAdamW8bit" if name == "qlora" else "torch AdamW",
                      "batch": f"{batch_size} x {seq_len} tokens"}
    return rows


def quality_figures(rows=8, seq_len=128):
    """Perplexity of the first rows x seq_len tokens of the Shakespeare text (Exercise 5, Part 6)."""
    import math
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    source, dtype = gpt2_source(), pick_compute_dtype()
    tokenizer = AutoTokenizer.from_pretrained(source)
    ids = torch.tensor(tokenizer(load_shakespeare())["input_ids"][: rows * seq_len]).view(rows, seq_len).cuda()

    def nf4(double_quant):
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype,
                                  bnb_4bit_use_double_quant=double_quant)

    configs = {"float32": None, "int8": BitsAndBytesConfig(load_in_8bit=True), "nf4": nf4(True),
               "nf4_no_double_quant": nf4(False)}
    out = {}
    for name, config in configs.items():
        free_cuda_memory()
        model = AutoModelForCausalLM.from_pretrained(source, quantization_config=config, device_map={"": 0}).eval()
        with torch.no_grad():
            out[name] = math.exp(model(input_ids=ids, labels=ids).loss.item())
        del model
    return {"tokens": f"{rows} x {seq_len}", "standin": source != "gpt2", "perplexity": out}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    require_cuda("These figures")
    props = torch.cuda.get_device_properties(0)
    figures = {"device": props.name, "torch": torch.__version__, "compute_dtype": str(pick_compute_dtype()),
               "inference": inference_figures(), "training": training_figures(), "quality": quality_figures()}
    fp32 = figures["inference"]["float32"]["cuda_bytes"]
    print(f"\n{figures['device']} | torch {figures['torch']} | 4-bit compute dtype {figures['compute_dtype']}")
    print(f"{'model':8s} {'CUDA MB':>8s} {'footprint MB':>13s} {'theory MB':>10s} {'CUDA/theory':>12s} "
          f"{'vs fp32':>8s} {'tokens/s':>9s} {'agree':>6s}")
    for name, r in figures["inference"].items():
        print(f"{name:8s} {r['cuda_bytes'] / 1e6:8.1f} {r['footprint_bytes'] / 1e6:13.1f} "
              f"{r['theoretical_weight_bytes'] / 1e6:10.1f} {r['cuda_bytes'] / r['theoretical_weight_bytes']:12.3f} "
              f"{fp32 / r['cuda_bytes']:7.2f}x {r['tokens_per_s']:9.1f} {r['token_agreement_vs_float32']:6.0%}")
    print(f"\n{'training':8s} {'trainable':>12s} {'peak MB':>9s} {'ms/step':>8s}  batch")
    for name, r in figures["training"].items():
        print(f"{name:8s} {r['trainable_params']:12,d} {r['peak_cuda_bytes'] / 1e6:9.1f} {r['ms_per_step']:8.1f}  "
              f"{r['batch']}, {r['optimizer']}")
    full = figures["training"]["full"]["peak_cuda_bytes"]
    for name in ("lora", "qlora"):
        peak = figures["training"][name]["peak_cuda_bytes"]
        print(f"{name} peak memory is {peak / full:.0%} of full finetuning's ({full / peak:.2f}x less)")
    quality = figures["quality"]
    print(f"\nperplexity on {quality['tokens']} tokens of the Shakespeare text"
          + (" (OFFLINE STAND-IN, random weights: only the differences mean something)" if quality["standin"] else ""))
    base = quality["perplexity"]["float32"]
    for name, ppl in quality["perplexity"].items():
        print(f"{name:20s} {ppl:14.4f} {100 * (ppl / base - 1):+9.4f}% vs float32")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
