"""What a judge knows about a grading besides the data: the machine the notebook runs on, and heavy
references computed in a process of their own.

`context_factory(env)` gives each check a `judges._core.Context`: a fresh seed, whether the notebook sees a
CUDA GPU and whether it computes in bfloat16 (asked of nvidia-smi here, never of the notebook, and without
initializing CUDA in the worker), and `references`: a trusted process per grading worker and environment
(`python -m judges._reference`) that runs `reference_<task>` of a judge module (bitsandbytes, a full GPT-2, a
CUDA measurement) and whose results are cached by their arguments, so a class pays each one once.
"""
import atexit
import functools
import json
import os
import subprocess
import sys
import threading

from instructor.course.notebooks import ROOT
from judges._core import Context, fresh_seed

SERVE = "import sys; sys.path[:0] = {path!r}; from judges._reference import serve; serve()"


@functools.lru_cache(maxsize=16)
def _compute_capability(visible: str):
    """(major, minor) of the first GPU `visible` (CUDA_VISIBLE_DEVICES, None: all), or None without one."""
    if visible == "":
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index,compute_cap", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    rows = [line.split(",") for line in out.stdout.splitlines() if "," in line] if out.returncode == 0 else []
    first = (visible or "").split(",")[0].strip()
    for index, cap in rows:
        if visible is None or index.strip() == first:
            major, _, minor = cap.strip().partition(".")
            return int(major), int(minor or 0)
    return None


def machine(env: dict) -> tuple:
    """(cuda, bf16) for a notebook run with `env`."""
    capability = _compute_capability(env.get("CUDA_VISIBLE_DEVICES"))
    return capability is not None, capability is not None and capability >= (8, 0)


class References:
    """One trusted process running judges' reference tasks, and the results it gave, for one environment."""

    def __init__(self, env: dict):
        self.env, self.lock, self.cache, self.process = env, threading.Lock(), {}, None

    def __call__(self, exercise: str, task: str, **arguments):
        key = json.dumps([exercise, task, arguments], sort_keys=True)
        with self.lock:
            if key not in self.cache:
                self.cache[key] = self._run({"exercise": exercise, "task": task, "arguments": arguments})
            return self.cache[key]

    def _run(self, job: dict):
        for _ in range(2):  # one restart if the process died (a CUDA error, say)
            if self.process is None or self.process.poll() is not None:
                path = [p for p in self.env["PYTHONPATH"].split(os.pathsep) if p]  # -I: PYTHONPATH is not read
                self.process = subprocess.Popen([sys.executable, "-I", "-c", SERVE.format(path=path)],
                                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=self.env,
                                                stderr=subprocess.DEVNULL, text=True, cwd=str(ROOT))
            try:
                self.process.stdin.write(json.dumps(job) + "\n")
                self.process.stdin.flush()
                line = self.process.stdout.readline()
            except OSError:
                line = ""
            if line:
                reply = json.loads(line)
                if "error" in reply:
                    raise RuntimeError(f"reference {job['exercise']}.{job['task']} failed: {reply['error']}")
                return reply["result"]
            self.close()
        raise RuntimeError(f"the reference process stopped while computing {job['exercise']}.{job['task']}")

    def close(self):
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


_REFERENCES, _LOCK = {}, threading.Lock()


@atexit.register
def _close_all():
    for shared in list(_REFERENCES.values()):
        shared.close()


def references(env: dict) -> References:
    """The reference process of this worker for `env` (what the notebook sees: GPU, caches, threads)."""
    wanted = {k: v for k, v in env.items() if not k.startswith("PYTEST_")}
    wanted["PYTHONPATH"] = os.pathsep.join(p for p in [str(ROOT), env.get("PYTHONPATH", "")] if p)
    key = json.dumps(wanted, sort_keys=True)
    with _LOCK:
        if key not in _REFERENCES:
            _REFERENCES[key] = References(wanted)
        return _REFERENCES[key]


def context_factory(env: dict):
    cuda, bf16 = machine(env)
    shared = references(env)
    return lambda: Context(fresh_seed(), cuda, bf16, shared)
