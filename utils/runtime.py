"""How much work a notebook does on this machine."""
import os

import torch


def training_steps(gpu: int, cpu: int) -> int:
    """Steps for a training loop: `gpu` on a CUDA machine, `cpu` otherwise.

    COURSE_MAX_STEPS caps both (the test suite sets it to keep notebook runs short)."""
    steps = gpu if torch.cuda.is_available() else cpu
    cap = os.environ.get("COURSE_MAX_STEPS")
    return min(steps, int(cap)) if cap else steps
