"""Run notebooks the way Colab's *Run all* does, each in a fresh kernel with its own folder as the working
directory. tests/test_student_path.py runs this with a fresh virtual environment's Python, so it needs
nothing but nbclient and nbformat (no pytest, no course code).

    python run_as_student.py RESULTS.json NOTEBOOK.ipynb ...

Each notebook is written back with its outputs; RESULTS.json gets {name: {"seconds", "error"}}."""
import json
import pathlib
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
        NotebookClient(nb, timeout=900, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    except CellExecutionError as failure:
        error = str(failure)[-4000:]
    nbformat.write(nb, path)
    return {"seconds": round(time.perf_counter() - start, 1), "error": error}


def main(results_path: str, *notebooks: str) -> int:
    results = {}
    for notebook in notebooks:
        path = pathlib.Path(notebook)
        results[path.stem] = run(path)
        print(f"{path.stem}: {results[path.stem]['seconds']} s, {'FAILED' if results[path.stem]['error'] else 'ok'}",
              flush=True)
    pathlib.Path(results_path).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
