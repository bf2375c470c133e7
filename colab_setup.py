"""Setup for the course notebooks: the first cell of every notebook calls `setup()`.

In Google Colab it installs the packages that are missing (never torch: Colab's CUDA build must stay)
and reports the GPU and bitsandbytes. Anywhere else it installs nothing and tells you what to run.
Either way it makes `utils/` importable and applies the course's plotting style."""
import importlib.metadata
import importlib.util
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.abspath(__file__))

# import name -> what pip installs in Colab when it is missing
COLAB_PACKAGES = {
    "transformers": "transformers>=4.56",
    "peft": "peft>=0.17",
    "bitsandbytes": "bitsandbytes>=0.46",
    "matplotlib": "matplotlib",
    "tqdm": "tqdm",
}


def in_colab() -> bool:
    return "google.colab" in sys.modules


def missing_packages() -> list:
    return [spec for name, spec in COLAB_PACKAGES.items() if importlib.util.find_spec(name) is None]


def bitsandbytes_status() -> str:
    if importlib.util.find_spec("bitsandbytes") is None:
        return "bitsandbytes: not installed (Exercise 5 needs it)"
    version = importlib.metadata.version("bitsandbytes")
    import torch
    where = "CUDA kernels" if torch.cuda.is_available() else "CPU backend only: GPU memory can't be measured"
    return f"bitsandbytes {version}: {where}"


def setup() -> None:
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    missing = missing_packages()
    if missing and in_colab():
        print("Installing:", ", ".join(missing))
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", *missing], check=True)
        missing = missing_packages()
    if importlib.util.find_spec("torch") is None:
        sys.exit("PyTorch is missing. Outside Colab: pip install -r requirements-lock.txt "
                 "(or conda env create -f environment.yml).")
    if missing:
        print("Missing packages:", ", ".join(missing))
        print("Install the course's pinned versions with: pip install -r requirements-lock.txt")

    import torch
    from utils import describe_device, use_course_style
    use_course_style()
    print(f"torch {torch.__version__} | {describe_device()}")
    print(bitsandbytes_status())
    if in_colab() and not torch.cuda.is_available():
        print("Tip: Runtime > Change runtime type > T4 GPU gives you a free GPU for Exercises 4 and 5.")
