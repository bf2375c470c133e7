"""Which device and which compute dtype a notebook should use."""
import torch


class NoCudaError(RuntimeError):
    """Raised where a measurement only means something on a CUDA GPU."""

    def _render_traceback_(self):  # IPython shows this instead of a stack trace
        return [f"NoCudaError: {self}"]


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def supports_bf16() -> bool:
    """bfloat16 needs compute capability 8.0 (Ampere) or newer: a T4 (7.5) has none."""
    return torch.cuda.is_available() and torch.cuda.get_device_capability(0) >= (8, 0)


def pick_compute_dtype() -> torch.dtype:
    """The 16-bit dtype bitsandbytes should compute in on this machine."""
    if supports_bf16():
        return torch.bfloat16
    if torch.cuda.is_available():
        return torch.float16  # T4 and older: fast float16, no bfloat16
    return torch.float32  # CPU kernels are fastest and most complete in float32


def describe_device() -> str:
    if not torch.cuda.is_available():
        return "CPU only (no CUDA GPU found): GPU measurements in these notebooks will be skipped."
    props = torch.cuda.get_device_properties(0)
    major, minor = torch.cuda.get_device_capability(0)
    return (f"GPU: {props.name}, {props.total_memory / 1e9:.1f} GB, compute capability {major}.{minor}, "
            f"bfloat16 {'supported' if supports_bf16() else 'NOT supported (float16 will be used)'}")


def require_cuda(what: str) -> None:
    """Stop with a clear message (not a stack trace) when `what` needs a CUDA GPU."""
    if not torch.cuda.is_available():
        raise NoCudaError(
            f"{what} needs a CUDA GPU, and this machine has none. In Colab: Runtime > Change runtime type > "
            "T4 GPU. Instructors: grade this notebook on a GPU machine.")
