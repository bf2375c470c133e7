"""Run notebooks the way Colab's *Run all* does, each in a fresh kernel with its own folder as the working
directory. tests/test_student_path.py runs this with a fresh virtual environment's Python, so it needs
nothing but nbclient and nbformat (no pytest, no course code).

    python run_as_student.py RESULTS.json NOTEBOOK.ipynb ...

Each notebook is written back with its outputs; RESULTS.json gets {name: {"seconds", "error"}}. The first
notebook runs alone (its setup cell may install packages, as a student's first notebook does); the others
then run two at a time, each in its own process (STUDENT_PARALLEL sets how many)."""
import concurrent.futures
import json
import os
import pathlib
import subprocess
import sys
import time

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError


def run(path: pathlib.Path) -> dict:
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    error = None
    try:
        NotebookClient(nb, timeout=900, kernel_name="python3", shutdown_kernel="immediate",  # nothing waits on its exit
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    except CellExecutionError as failure:
        error = str(failure)[-4000:]
    nbformat.write(nb, path)
    return {"seconds": round(time.perf_counter() - start, 1), "error": error}


def run_apart(notebook: str) -> dict:
    """`run` in a process of its own (a kernel client per process keeps the runs independent)."""
    done = subprocess.run([sys.executable, __file__, "--one", notebook], capture_output=True, text=True)
    if done.returncode != 0:
        return {"seconds": 0.0, "error": f"the runner failed:\n{done.stderr[-4000:]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(results_path: str, *notebooks: str) -> int:
    results = {}

    def report(notebook, result):
        name = pathlib.Path(notebook).stem
        results[name] = result
        print(f"{name}: {result['seconds']} s, {'FAILED' if result['error'] else 'ok'}", flush=True)

    first, rest = notebooks[0], notebooks[1:]
    report(first, run_apart(first))
    with concurrent.futures.ThreadPoolExecutor(int(os.environ.get("STUDENT_PARALLEL", "2"))) as pool:
        for notebook, result in zip(rest, pool.map(run_apart, rest)):
            report(notebook, result)
    pathlib.Path(results_path).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    if sys.argv[1] == "--one":
        print(json.dumps(run(pathlib.Path(sys.argv[2]))))
        sys.exit(0)
    sys.exit(main(*sys.argv[1:]))
