"""A notebook's code cells run in this very process, the hidden checks judging in it too (stock mode):
seconds instead of a grading's set-up, for a contributor who changes a check (`make test-fast`) and for
developing one. Not a grading: nothing here is isolated, and the engine's proofs are in test_answers.py.

    python -m tests.inprocess ex2_quantization [answer [wrong-index]]
"""
import contextlib
import io
import os
import sys

from instructor.course.notebooks import ROOT, notebook_path, read_notebook
from instructor.grading.cleanroom import Shell, compile_cell, transformer


def run(nb: dict, stop_after: set = None) -> dict:
    """grade_id -> (passed, what the test cell printed or raised) for each test cell run, in order."""
    os.environ.setdefault("COURSE_ROOT", str(ROOT))
    os.environ.setdefault("COURSE_OFFLINE", "1")
    transform = transformer()
    ns = {"__name__": "__main__"}
    shell = Shell(ns, transform)
    ns["get_ipython"] = shell.get_ipython
    results, waiting = {}, set(stop_after or ())
    for index, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        code, last = compile_cell("".join(cell["source"]), index, transform)
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        is_test = cell.get("metadata", {}).get("nbgrader", {}).get("grade")
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out):
                exec(code, ns)  # noqa: S102 - the course's own notebooks, run by a contributor
                if last is not None:
                    eval(last, ns)  # noqa: S307
            ok = True
        except Exception as error:  # noqa: BLE001 - a cell's error is its result
            ok = False
            print(f"{type(error).__name__}: {error}", file=out)
        if is_test:
            results[grade_id] = (ok, out.getvalue())
            waiting.discard(grade_id)
            if stop_after and not waiting:
                break
    return results


def main(argv) -> int:
    from tests.course import answers_module, cells_grading, up_to_last_of, with_cell
    assignment = argv[0]
    nb = read_notebook(notebook_path(assignment, "solution"))
    if len(argv) > 1:
        answer = argv[1]
        variants = answers_module(assignment).WRONG[answer]
        pick = [variants[int(argv[2])]] if len(argv) > 2 else variants
        for label, source in pick:
            cut = up_to_last_of(with_cell(nb, answer, source), cells_grading(nb, answer))
            for grade_id, (ok, said) in run(cut).items():
                print(f"[{label}] {grade_id}: {'PASS' if ok else 'FAIL'} {said.strip().splitlines()[-1] if said.strip() else ''}")
        return 0
    for grade_id, (ok, said) in run(nb).items():
        print(f"{grade_id}: {'PASS' if ok else 'FAIL'} {said.strip().splitlines()[-1] if said.strip() else ''}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main(sys.argv[1:]))
