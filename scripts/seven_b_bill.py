"""The course's one 7B finetuning bill, computed by Exercise 1's memory calculator and written to
utils/data/seven_b_bill.json, which Exercise 5 reads through utils.bill.

Nothing here types a figure: the script runs, from source/ex1_memory, the reference solution's cells (the
calculator: bytes_per_param ... memory_for_finetuning), Part 5's table of GPUs, and the notebook's own cells that
build the bill (`code_llama`: the Llama parameter counts; `code_bill`: `finetuning_bill` and `bill_7b`). A student
running Exercise 1 builds the same bill from their own functions.

    .venv/bin/python scripts/seven_b_bill.py          # rewrite utils/data/seven_b_bill.json
    .venv/bin/python scripts/seven_b_bill.py --check  # exit 1 if the file is not what the notebook computes
"""
import ast
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
SOURCE = ROOT / "source" / "ex1_memory" / "ex1_memory.ipynb"
OUT = ROOT / "utils" / "data" / "seven_b_bill.json"
GPUS_CELL, GPUS_NAME = "code_6", "GPUS"  # Part 5's GPUs: {name: usable GB}
BILL_CELLS = ("code_llama", "code_bill")  # after these run, the notebook holds the bill as `bill_7b`
BILL_NAME = "bill_7b"


def _cells(notebook):
    return [(cell.get("metadata", {}).get("nbgrader", {}), "".join(cell["source"]))
            for cell in notebook["cells"] if cell["cell_type"] == "code"]


def assignment(source: str, name: str) -> ast.Module:
    """Only the statements of a cell's `source` that assign `name`, ready to compile."""
    nodes = [node for node in ast.parse(source).body
             if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets)]
    return ast.Module(body=nodes, type_ignores=[])


def calculator(path=SOURCE) -> dict:
    """The namespace Exercise 1's notebook has when it builds the bill: the reference solution's functions, Part 5's
    GPUS and the bill cells, run in notebook order (nothing else: no plots, no transformers)."""
    cells = _cells(json.loads(pathlib.Path(path).read_text(encoding="utf-8")))
    by_id = {meta.get("grade_id"): source for meta, source in cells}
    missing = [cid for cid in (GPUS_CELL, *BILL_CELLS) if cid not in by_id]
    if missing:
        raise SystemExit(f"{path} has no cell(s) {missing}: scripts/seven_b_bill.py names the cells that build the bill")
    ns = {"__name__": "ex1_memory_bill"}
    for meta, source in cells:
        if meta.get("solution"):
            exec(compile(source, f"ex1_memory:{meta['grade_id']}", "exec"), ns)  # noqa: S102 - the course's source
    gpus = assignment(by_id[GPUS_CELL], GPUS_NAME)
    if len(gpus.body) != 1:
        raise SystemExit(f"cell {GPUS_CELL} should assign {GPUS_NAME} once")
    exec(compile(gpus, f"ex1_memory:{GPUS_CELL}", "exec"), ns)  # noqa: S102
    for cid in BILL_CELLS:
        exec(compile(by_id[cid], f"ex1_memory:{cid}", "exec"), ns)  # noqa: S102
    return ns


def compute(path=SOURCE) -> dict:
    """The bill as Exercise 1's reference solution computes it, in the JSON's own types."""
    return json.loads(render(calculator(path)[BILL_NAME]))


def render(bill: dict) -> str:
    return json.dumps(bill, indent=1, ensure_ascii=False) + "\n"


def main(argv):
    text = render(compute())
    if "--check" in argv:
        if not OUT.exists() or OUT.read_text(encoding="utf-8") != text:
            print(f"{OUT.relative_to(ROOT)} is not what Exercise 1 computes: run scripts/seven_b_bill.py")
            return 1
        print(f"{OUT.relative_to(ROOT)} is up to date")
        return 0
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
