"""Exercise 2's checks, the collector's half: each calls the student's function on the judge's inputs
(judges/ex2_quantization.py draws them and decides) and hands back what came out, and whether the call
changed its inputs in place. `query_block` takes a model: the collector builds the small random GPT-2 the
request describes (a config and a seed); the judge builds the same one in its own process."""
import warnings

from graders._collect import answer, attempt, calls, check, seeded


def check_absmax_quantize(ns):
    check("ex2_quantization", "absmax_quantize", ns, calls)


def check_absmax_dequantize(ns):
    check("ex2_quantization", "absmax_dequantize", ns, calls)


def check_zero_point_quantize(ns):
    check("ex2_quantization", "zero_point_quantize", ns, calls)


def check_zero_point_dequantize(ns):
    check("ex2_quantization", "zero_point_dequantize", ns, calls)


def check_query_block(ns):
    check("ex2_quantization", "query_block", ns, on_models)


def check_absmax_quantize_blocks(ns):
    check("ex2_quantization", "absmax_quantize_blocks", ns, calls)


def check_absmax_dequantize_blocks(ns):
    check("ex2_quantization", "absmax_dequantize_blocks", ns, calls)


# ------------------------------------------------------------------------------------ models as inputs
def small_gpt2(config: dict, seed: int):
    """A GPT-2 with random weights: GPT2LMHeadModel(GPT2Config(**config)) built right after
    torch.manual_seed(seed), on the CPU in float32, the notebook's own random state left as it was."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging as hf_logging
    verbosity, dtype = hf_logging.get_verbosity(), torch.get_default_dtype()
    try:
        hf_logging.set_verbosity_error()
        torch.set_default_dtype(torch.float32)
        with warnings.catch_warnings(), seeded(seed), torch.device("cpu"):
            warnings.simplefilter("ignore")
            model = GPT2LMHeadModel(GPT2Config(**config))
    finally:
        torch.set_default_dtype(dtype)
        hf_logging.set_verbosity(verbosity)
    return model.eval()


def on_models(ns: dict, request: dict) -> dict:
    """The collector of an answer that takes a model: call it once on each model the request describes.

    request: {"answer": name, "models": [{"config": {...GPT2Config arguments}, "seed": int}, ...]}."""
    data, fn = answer(ns, request["answer"])
    if fn is None:
        return data
    data["calls"] = [attempt(fn, small_gpt2(spec["config"], spec["seed"])) for spec in request["models"]]
    return data
