"""Helpers shared by the five notebooks: device and dtype choice, memory measurement,
GPT-2 and text loading with an offline default, plotting style, and student self-checks."""
from utils.device import describe_device, pick_compute_dtype, pick_device, require_cuda, supports_bf16
from utils.memory import cuda_memory_bytes, dir_size_bytes, measure_cuda_memory, parameter_bytes
from utils.models import (gpt2_source, is_small_trained, is_standin, load_gpt2, load_quality_model,
                          load_quality_tokenizer, load_tokenizer, quality_source)
from utils.data import load_shakespeare
from utils.plotting import use_course_style
from utils.prose import say
from utils.selfcheck import expect, expect_close, reveal
from utils.runtime import training_steps
from utils.quiet import quiet_harmless_messages

quiet_harmless_messages()

__all__ = [
    "describe_device", "pick_compute_dtype", "pick_device", "require_cuda", "supports_bf16",
    "cuda_memory_bytes", "dir_size_bytes", "measure_cuda_memory", "parameter_bytes",
    "gpt2_source", "is_standin", "load_gpt2", "load_tokenizer", "quality_source", "load_quality_model",
    "load_quality_tokenizer", "is_small_trained", "load_shakespeare",
    "use_course_style", "say", "expect", "expect_close", "reveal", "training_steps",
]
