"""Setup for the course notebooks: the first cell of every notebook calls `setup()`.

In Google Colab it installs what is missing and upgrades what is older than the course's floors, never
touching torch (Colab's CUDA build must stay: pip gets a constraint pinning the installed torch).
Anywhere else it installs only when asked (COURSE_INSTALL=1 or `setup(install=True)`) and otherwise
says what to run. Either way it makes `utils/` importable, applies the course's plotting style and
prints the versions, the device and its compute dtype, and how long setup took."""
import importlib.metadata
import os
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.abspath(__file__))

# The oldest versions the notebooks are tested with: tests/test_student_path.py runs every notebook in a
# fresh environment holding exactly these. Raise a floor when a notebook needs something newer.
# (`datasets` is not here: no notebook imports it; utils.load_shakespeare reads the text as a plain file.)
FLOORS = {
    # 5.2: GPT-2 built on the meta device has its lm_head tied and no attention-mask buffer (5.0 and 5.1
    # have neither, and Exercises 1 and 5 count parameters and bytes); quantized loads keep the
    # checkpoint's dtype for the layers they leave alone (transformers 4 casts them to float16)
    "transformers": "5.2.0",
    "peft": "0.18.0",
    # CPU kernels for 8-bit and NF4 (0.48 has them), vectorized in 0.50: loading GPT-2 in NF4 on a CPU takes
    # 2.4 s instead of 8.7 s with 0.48 / 0.49, so Exercise 5 runs all in about 70 s on a CPU, not about 175 s
    "bitsandbytes": "0.50.0",
    "accelerate": "1.10.0",  # device_map placement of quantized models
}
ANY_VERSION = ["matplotlib", "tqdm"]
SHOWN = ["torch", *FLOORS]  # the versions setup() prints


class SetupError(RuntimeError):
    """Setup cannot continue; the message says what to do."""

    def _render_traceback_(self):  # IPython shows this instead of a stack trace
        return [f"SetupError: {self}"]


def in_colab() -> bool:
    return "google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ


def installed_version(dist: str):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def version_tuple(version: str) -> tuple:
    """"5.0.0rc1" -> (5, 0, 0); enough to compare with a floor (packaging may not be installed yet)."""
    match = re.match(r"\d+(\.\d+)*", version)
    return tuple(int(part) for part in match.group(0).split(".")) if match else ()


def needed() -> list:
    """[(requirement, why)] for every package that is missing or older than its floor."""
    out = []
    for dist, floor in FLOORS.items():
        have = installed_version(dist)
        if have is None:
            out.append((f"{dist}>={floor}", "missing"))
        elif version_tuple(have) < version_tuple(floor):
            out.append((f"{dist}>={floor}", f"{have} is older than {floor}"))
    out += [(dist, "missing") for dist in ANY_VERSION if installed_version(dist) is None]
    return out


def pip_command(requirements: list, constraints_file: str) -> list:
    """pip, upgrading only what is asked for, with torch pinned to the installed build."""
    return [sys.executable, "-m", "pip", "install", "--quiet", "--upgrade", "--upgrade-strategy", "only-if-needed",
            "--constraint", constraints_file, *requirements]


def torch_constraint() -> str:
    have = installed_version("torch")
    if have is None:
        raise SetupError("PyTorch is missing. Outside Colab: pip install -r requirements-lock.txt "
                         "(or conda env create -f environment.yml). In Colab torch is preinstalled: "
                         "Runtime > Disconnect and delete runtime, then start again.")
    return f"torch=={have}\n"


def install(todo: list) -> None:
    requirements = [req for req, _ in todo]
    print("Installing: " + "; ".join(f"{req} ({why})" for req, why in todo))
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as constraints:
        constraints.write(torch_constraint())
    torch_before = installed_version("torch")
    done = subprocess.run(pip_command(requirements, constraints.name), capture_output=True, text=True)
    os.unlink(constraints.name)
    if done.returncode != 0:
        raise SetupError("pip could not install " + ", ".join(requirements) + " beside torch " + torch_before
                         + " (torch is never changed here).\n" + (done.stderr or done.stdout)[-2000:])
    importlib.invalidate_caches()
    stale = [req.split(">=")[0] for req in requirements if req.split(">=")[0] in sys.modules]
    if stale:
        raise SetupError(f"Upgraded {', '.join(stale)}, which this session had already imported. "
                         "Restart the session (Runtime > Restart session) and run this cell again.")


def versions_line() -> str:
    return " | ".join(f"{dist} {installed_version(dist) or 'missing'}" for dist in SHOWN)


def setup(install_packages=None) -> None:
    """Check (and in Colab, fix) the packages, make utils/ importable and say what this machine is."""
    start = time.perf_counter()
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    torch_constraint()  # no torch: stop here with what to do
    if install_packages is None:
        install_packages = in_colab() or os.environ.get("COURSE_INSTALL") == "1"
    todo = needed()
    if todo and install_packages:
        install(todo)
        todo = needed()
    if todo:
        raise SetupError("These notebooks need " + "; ".join(f"{req} ({why})" for req, why in todo)
                         + ".\nRun: pip install " + " ".join(f"'{req}'" for req, _ in todo)
                         + "\n(or pip install -r requirements-lock.txt for the exact versions the course is tested with)")

    from utils import describe_device, pick_compute_dtype, use_course_style
    use_course_style()
    print(versions_line())
    print(describe_device())
    print(f"compute dtype for quantized layers here: {str(pick_compute_dtype()).replace('torch.', '')}")
    print(f"setup took {time.perf_counter() - start:.1f} s")
    if in_colab():
        import torch
        if not torch.cuda.is_available():
            print("Tip: Runtime > Change runtime type > T4 GPU gives you a free GPU for Exercises 4 and 5.")
