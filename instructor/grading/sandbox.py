"""Stage 3 of a submission's trip: the sandbox a notebook runs in, and the limits it runs under.

Inside Linux namespaces where the machine allows (`UNSHARE`, then instructor/grading/jail.py: read-only
file system, no network, an own process tree), with an environment of its own (home, temporary files,
caches read-only, one thread unless asked). Both engines use it: the clean room's fork server
(instructor/grading/execute.py) and nbgrader's kernel (instructor/grading/kernel.py).
"""
from __future__ import annotations

import dataclasses
import functools
import os
import pathlib
import subprocess
import sys
import threading

from instructor.course.notebooks import ROOT

UNSHARE = ["unshare", "--user", "--map-root-user", "--pid", "--fork", "--mount-proc", "--net", "--mount",
           "--propagation", "private"]


@dataclasses.dataclass
class Limits:
    cell_timeout: int = 300  # seconds per cell
    notebook_timeout: int = 1800  # seconds for the whole notebook, re-runs included
    memory_mb: int = 6144  # resident memory of the kernel and its children
    max_output_bytes: int = 1_000_000  # output kept per cell
    threads: int = 1  # torch/BLAS threads of the kernel
    # "cleanroom": the clean room is the only run (a fork server per worker, the checks judged in the worker);
    # "kernel": nbgrader autograde in a Jupyter kernel first (the checks judged in the kernel, as stock
    # nbgrader does), then the clean room's verdict (slower; the way to compare with stock nbgrader)
    engine: str = "cleanroom"
    cleanroom: bool = True  # the kernel engine's clean-room verdict; off only to grade exactly as stock nbgrader
    # run the cells after the last graded one too (the clean-room engine skips them by default: they
    # cannot change a score, and in Exercise 4 they are the training run, three quarters of its time)
    trailing_cells: bool = False


# What a notebook's process may see of the course: the collectors, the helpers, the clean room's own code
# and colab_setup. Everything else of it (judges/, source/, solution/, tests/, autograded/, submitted/, the
# gradebook, .git) is hidden in the jail, and so is the temporary folder (other gradings' scratch courses).
VISIBLE_IN_THE_JAIL = ("graders", "utils", "instructor", "colab_setup.py")


def jail_options(env: dict) -> list:
    """`--hide` and `--keep` arguments of instructor/grading/jail.py for a fork server run with `env`."""
    import tempfile
    keep = [str(ROOT / name) for name in VISIBLE_IN_THE_JAIL]
    keep += [sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.path.realpath(sys.executable))]
    # installed code only: the interpreter's own folders, site-packages and what PYTHONPATH adds (a GPU box's carried
    # packages), never the worker's whole sys.path (the folder of a script that runs the grading, say)
    import site
    import sysconfig
    paths = [sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")]
    paths += [*site.getsitepackages(), *env.get("PYTHONPATH", "").split(os.pathsep)]
    keep += [p for p in paths if p and os.path.isdir(p) and _installed(p)]
    keep += [env[name] for name in ("COURSE_CACHE", "HF_HOME") if env.get(name)]
    hidden = [str(ROOT), os.path.realpath(tempfile.gettempdir())]
    covers = lambda path: any(h == path or h.startswith(path.rstrip(os.sep) + os.sep) for h in hidden)  # noqa: E731
    options = []
    for path in hidden:
        options += ["--hide", path]
    for path in dict.fromkeys(os.path.realpath(p) for p in keep):
        if not covers(path):  # a folder that holds a hidden one (a script's own /tmp, say) is not kept whole
            options += ["--keep", path]
    return options


def _installed(path: str) -> bool:
    """Is `path` (on sys.path) installed code, not the course's? (The venv may live inside the course.)"""
    path, root = os.path.realpath(path), str(ROOT)
    if path != root and not path.startswith(root + os.sep):
        return True
    return any(path == base or path.startswith(base + os.sep)
               for base in (os.path.realpath(sys.prefix), str(ROOT / ".gpu")))


@functools.cache
def namespaces_available() -> bool:
    try:
        return subprocess.run([*UNSHARE, "true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


_prepared, _prepare_lock = set(), threading.Lock()


def prepare_worker() -> None:
    """Build the offline GPT-2 stand-in once per process, outside any sandbox: inside one the cache is
    read-only (so no notebook can poison it for the next)."""
    with _prepare_lock:
        if "standin" not in _prepared:
            subprocess.run([sys.executable, "-c", "from utils.models import gpt2_source; gpt2_source()"],
                           cwd=ROOT, capture_output=True, env={**os.environ, "PYTHONPATH": pythonpath()})
            _prepared.add("standin")


def pythonpath() -> str:
    """The course first, then whatever the worker already had (a GPU box's carried packages, say)."""
    return os.pathsep.join(p for p in [str(ROOT), os.environ.get("PYTHONPATH", "")] if p)


def own_folders(folder: pathlib.Path) -> dict:
    """The variables that give one notebook a home, temporary files and caches of its own, inside `folder`."""
    home = folder / "home"
    # torch's compile caches too: importing torch._dynamo in the worker sets TORCHINDUCTOR_CACHE_DIR in its
    # environment, to a folder of the worker's /tmp, which the jail hides (and which is no notebook's)
    return {"HOME": str(home), "TMPDIR": str(folder / "tmp"), "IPYTHONDIR": str(home / ".ipython"),
            "MPLCONFIGDIR": str(home / ".matplotlib"), "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
            "XDG_CACHE_HOME": str(home / ".cache"), "TORCHINDUCTOR_CACHE_DIR": str(folder / "tmp" / "torchinductor"),
            "TRITON_CACHE_DIR": str(folder / "tmp" / "triton")}


def environment(sandbox: pathlib.Path, job) -> dict:
    return {**own_folders(sandbox), **shared_environment(job)}


def shared_environment(job) -> dict:
    """What every notebook of a worker sees alike (the clean room's fork server is keyed by it)."""
    real_home = pathlib.Path.home()
    env = {
        "MPLBACKEND": "Agg", "PYTHONDONTWRITEBYTECODE": "1",
        # Models are read from the grader's caches (read-only inside the jail), never fetched.
        "COURSE_CACHE": os.environ.get("COURSE_CACHE", str(real_home / ".cache" / "lora-course")),
        "HF_HOME": os.environ.get("HF_HOME", str(real_home / ".cache" / "huggingface")), "HF_HUB_OFFLINE": "1",
        "COURSE_ROOT": str(ROOT),
        **{name: str(job.limits.threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")},
    }
    if job.gpu != "inherit":
        env["CUDA_VISIBLE_DEVICES"] = job.gpu or ""
    return env


def _process_environment(own: dict) -> dict:
    """The worker's environment, the course first on PYTHONPATH and this Python's scripts on PATH, then `own`."""
    env = {**os.environ, "PYTHONPATH": pythonpath(), **own}
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
    return env


def run_environment(sandbox: pathlib.Path, job) -> dict:
    """A kernel-engine run's: its own HOME, TMPDIR and caches inside `sandbox`."""
    return _process_environment(environment(sandbox, job))


def fork_server_environment(job) -> dict:
    """A fork server's: only what every notebook of the worker shares (each job brings its own folders)."""
    return _process_environment(shared_environment(job))
