"""Measuring memory: CUDA allocations, parameter bytes, files on disk."""
import contextlib
import gc
import os

import torch


def cuda_memory_bytes() -> int:
    """Bytes currently allocated by PyTorch on the GPU (0 without CUDA)."""
    if not torch.cuda.is_available():
        return 0
    torch.cuda.synchronize()
    return torch.cuda.memory_allocated()


def free_cuda_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class CudaMeasurement:
    """What one `measure_cuda_memory` block allocated: `kept` (still held at the end) and `peak`."""
    kept: int = 0
    peak: int = 0

    def __repr__(self):
        return f"CudaMeasurement(kept={self.kept / 1e6:.1f} MB, peak={self.peak / 1e6:.1f} MB)"


@contextlib.contextmanager
def measure_cuda_memory():
    """Measure the GPU memory a block allocates, relative to what was allocated before it.

        with measure_cuda_memory() as m:
            model = load_something().cuda()
        print(m.kept, m.peak)
    """
    from utils.device import require_cuda
    require_cuda("Measuring GPU memory")
    free_cuda_memory()
    torch.cuda.reset_peak_memory_stats()
    before = cuda_memory_bytes()
    m = CudaMeasurement()
    try:
        yield m
    finally:
        torch.cuda.synchronize()
        m.kept = torch.cuda.memory_allocated() - before
        m.peak = torch.cuda.max_memory_allocated() - before


def parameter_bytes(model: torch.nn.Module) -> int:
    """Bytes held by a model's parameters and buffers, as they are stored (int8, packed 4-bit, ...)."""
    tensors = list(model.parameters()) + list(model.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


def dir_size_bytes(path) -> int:
    """Total size of the files under `path` (an adapter folder, a checkpoint)."""
    return sum(os.path.getsize(os.path.join(root, name))
               for root, _, names in os.walk(path) for name in names)
