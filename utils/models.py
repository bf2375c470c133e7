"""GPT-2 for the notebooks: the real `gpt2` from the Hugging Face hub when it can be had, otherwise a
local stand-in with the real architecture (so every parameter count and memory figure is exact) and
random weights (so its generations are meaningless, and the notebooks say so).

Every notebook loads through the ordinary API with the path this module hands out:

    GPT2 = gpt2_source()
    model = AutoModelForCausalLM.from_pretrained(GPT2)
"""
import functools
import json
import os
import pathlib
import shutil
import socket
import tempfile

import torch

HUB_ID = "gpt2"
STANDIN_FLAG = "course_standin"  # written into the stand-in's config.json
TOKENIZER_VOCAB = 4096  # the stand-in tokenizer's vocabulary (the model keeps GPT-2's 50,257 rows)


def _cache_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get("COURSE_CACHE", pathlib.Path.home() / ".cache" / "lora-course"))


def hub_reachable(timeout: float = 2.0) -> bool:
    if os.environ.get("COURSE_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1":
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _real_gpt2_cached() -> bool:
    if os.environ.get("COURSE_OFFLINE") == "1":
        return False
    try:
        from huggingface_hub import try_to_load_from_cache
        return isinstance(try_to_load_from_cache(HUB_ID, "config.json"), str)
    except Exception:
        return False


@functools.cache
def real_gpt2_available() -> bool:
    """The hub's `gpt2` is cached here or the hub answers: asked once per process (offline, the probe waits)."""
    return _real_gpt2_cached() or hub_reachable()


@functools.cache
def gpt2_source() -> str:
    """"gpt2" where the real model can be loaded, otherwise the path of the local stand-in.

    Set COURSE_OFFLINE=1 to force the stand-in (the tests and CI do)."""
    if real_gpt2_available():
        print("GPT-2: the real pretrained `gpt2` from the Hugging Face hub.")
        return HUB_ID
    path = _build_standin()
    print("GPT-2: no model hub here, so this notebook uses an OFFLINE STAND-IN: the real GPT-2 architecture\n"
          "(124,439,808 parameters, so every count and memory figure is exact) with RANDOM weights and a\n"
          "small locally trained tokenizer. Its generated text is meaningless; in Colab you get the real model.")
    return str(path)


def _model(source, **kwargs):
    """`AutoModelForCausalLM.from_pretrained(source, **kwargs)`, quietly."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging
    logging.disable_progress_bar()
    return AutoModelForCausalLM.from_pretrained(source, **kwargs)


def _tokenizer(source):
    """The tokenizer at `source`, with the end-of-text token doubling as padding."""
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(source)
    tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_gpt2(**kwargs):
    """`AutoModelForCausalLM.from_pretrained(gpt2_source(), **kwargs)`, quietly."""
    return _model(gpt2_source(), **kwargs)


def load_tokenizer():
    """GPT-2's tokenizer (or the stand-in's), with the end-of-text token doubling as padding."""
    return _tokenizer(gpt2_source())


SMALL_GPT2 = pathlib.Path(__file__).parent / "data" / "small-gpt2"  # made by scripts/train_small_gpt2.py
SMALL_FLAG = "course_small_trained"  # written into the small model's config.json


@functools.cache
def quality_source() -> str:
    """For lessons about quality (perplexity, generations, loss curves): "gpt2" where the real model can be
    loaded, otherwise the path of the small GPT-2 trained on Shakespeare that ships with the course.

    The real-size stand-in of `gpt2_source()` has exact counts and memory but random weights, so nothing it
    generates or scores means anything; the small model has learned English verse and does."""
    if real_gpt2_available():
        print("Quality model: the real pretrained `gpt2` from the Hugging Face hub.")
        return HUB_ID
    config = json.loads((SMALL_GPT2 / "config.json").read_text())
    print(f"Quality model: no model hub here, so the SMALL GPT-2 that ships with the course: the GPT-2 architecture\n"
          f"at {config['n_layer']} layers of width {config['n_embd']}, pretrained on Shakespeare's plays except\n"
          f"Coriolanus (scripts/train_small_gpt2.py). Its scores and texts are real, at a small model's level.")
    return str(SMALL_GPT2)


def load_quality_model(**kwargs):
    """`AutoModelForCausalLM.from_pretrained(quality_source(), **kwargs)`, quietly."""
    return _model(quality_source(), **kwargs)


def load_quality_tokenizer():
    """The tokenizer of `quality_source()`, with the end-of-text token doubling as padding."""
    return _tokenizer(quality_source())


def is_small_trained(model_or_config) -> bool:
    config = getattr(model_or_config, "config", model_or_config)
    return bool(getattr(config, SMALL_FLAG, False))


def is_standin(model_or_config) -> bool:
    config = getattr(model_or_config, "config", model_or_config)
    return bool(getattr(config, STANDIN_FLAG, False))


def _build_standin() -> pathlib.Path:
    """Save the stand-in once per machine; later loads read it from disk like any checkpoint."""
    target = _cache_dir() / "gpt2-standin-v3"  # bump the suffix whenever the stand-in changes
    if (target / "model.safetensors").exists() and (target / "tokenizer.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(dir=target.parent))  # rename at the end: safe for parallel runs
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging
    logging.disable_progress_bar()
    config = GPT2Config(**{STANDIN_FLAG: True})  # the defaults are GPT-2 small's real hyperparameters
    tokenizer = _standin_tokenizer()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = GPT2LMHeadModel(config)
        # The model keeps GPT-2's 50,257 token rows, but the small tokenizer prints only the first few
        # thousand. Zeroing the others (never an input) gives them logit 0, below the best printable
        # token's, so greedy generation stays printable at no cost per step.
        with torch.no_grad():
            model.transformer.wte.weight[len(tokenizer):] = 0
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    try:
        staging.rename(target)
    except OSError:  # another process finished first
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _standin_tokenizer():
    """A byte-level BPE tokenizer (GPT-2's scheme) trained here on the bundled Shakespeare text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    from utils.data import bundled_text
    eos = "<|endoftext|>"
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=TOKENIZER_VOCAB, special_tokens=[eos],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([bundled_text()], trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=eos, eos_token=eos, unk_token=eos,
                                   model_max_length=1024)
