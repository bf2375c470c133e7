"""Heavy references, in a process of their own: `reference_<task>(**arguments)` of a judge module, run where
the judge's own process should not (bitsandbytes, a full GPT-2, a CUDA measurement), the result JSON.

The grading engine starts one such process per grading worker (instructor/grading/reference.py) and
caches each result by its arguments; stock nbgrader runs them in the notebook's own process.

    python -I -m judges._reference   # serve: one JSON task per line on stdin, one JSON result per line out
"""
import importlib
import json
import sys


def run(exercise: str, task: str, arguments: dict):
    module = importlib.import_module(f"judges.{exercise}")
    result = getattr(module, f"reference_{task}")(**arguments)
    return json.loads(json.dumps(result))


def serve() -> None:
    out = sys.stdout
    sys.stdout = sys.stderr  # what a library prints never mixes with the results
    for line in sys.stdin:
        try:
            job = json.loads(line)
            reply = {"result": run(job["exercise"], job["task"], job.get("arguments", {}))}
        except Exception as error:  # noqa: BLE001 - the worker reports it as the judge's own problem
            reply = {"error": f"{type(error).__name__}: {error}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()


if __name__ == "__main__":
    serve()
