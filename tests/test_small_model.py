"""The quality model that ships offline (utils/data/small-gpt2/): small enough to ship, honest about its
training, and good enough that quantization moves its perplexity the way Exercise 5 says it does."""
import json
import math

import pytest
import torch

from utils.data import bundled_text
from utils.models import SMALL_FLAG, SMALL_GPT2


def test_it_ships_small_with_its_recipe():
    size = sum(f.stat().st_size for f in SMALL_GPT2.iterdir())
    assert size <= 8_000_000, f"utils/data/small-gpt2 holds {size:,} bytes; the course ships at most 8 MB"
    config = json.loads((SMALL_GPT2 / "config.json").read_text())
    assert config["model_type"] == "gpt2" and config[SMALL_FLAG] is True
    training = json.loads((SMALL_GPT2 / "training.json").read_text())
    assert training["script"] == "scripts/train_small_gpt2.py" and "seed" in training["recipe"]
    assert "coriolanus" in training["corpus"], "the evaluation text must be held out of pretraining"


def _perplexities():
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    tokenizer = AutoTokenizer.from_pretrained(SMALL_GPT2)
    ids = torch.tensor(tokenizer(bundled_text())["input_ids"])
    rows = ids[: len(ids) // 128 * 128].view(-1, 128)[:32]
    configs = {"float32": None, "int8": BitsAndBytesConfig(load_in_8bit=True),
               "nf4": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                         bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.float32),
               "nf4, no double quantization": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                                 bnb_4bit_compute_dtype=torch.float32)}
    out = {}
    for name, config in configs.items():
        model = AutoModelForCausalLM.from_pretrained(SMALL_GPT2, quantization_config=config).eval()
        with torch.no_grad():
            out[name] = math.exp(model(rows, labels=rows).loss.item())
    return out


@pytest.mark.slow
def test_quantization_moves_perplexity_the_way_the_lesson_says():
    ppl = _perplexities()
    assert ppl["float32"] < 200, f"the small model has not learned English verse: perplexity {ppl['float32']:.0f}"
    # int8 rounds to 255 levels a row: it costs far less than NF4's 16 levels a block of 64.
    assert ppl["int8"] - ppl["float32"] < (ppl["nf4"] - ppl["float32"]) / 2, ppl
    assert ppl["nf4"] > ppl["float32"], ppl
    # Double quantization rounds only the scales (8-bit, blocks of 256): a small change, either way.
    assert abs(ppl["nf4, no double quantization"] - ppl["nf4"]) < (ppl["nf4"] - ppl["float32"]), ppl
