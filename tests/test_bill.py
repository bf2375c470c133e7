"""The course's one 7B bill (utils/data/seven_b_bill.json, read through utils.bill) is what Exercise 1's
calculator computes: regenerated here from the reference solution in source/ex1_memory, it must match the file,
and the notebook's own table must show the same totals."""
import contextlib
import importlib.util
import io
import json

import pytest

from instructor.course.notebooks import ROOT
from utils.bill import PATH, seven_b_bill

METHODS = {"full", "lora", "qlora", "qlora_no_dq"}


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("seven_b_bill", ROOT / "scripts" / "seven_b_bill.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_json_is_what_exercise_1_computes(script):
    computed, written = script.compute(), PATH.read_text(encoding="utf-8")
    assert computed == json.loads(written), (
        "utils/data/seven_b_bill.json drifted from Exercise 1's calculator: run `.venv/bin/python "
        "scripts/seven_b_bill.py` and commit the file")
    assert script.render(computed) == written, "the file is not in the script's format"


def test_the_bill_has_the_api_exercise_5_reads():
    bill = seven_b_bill()
    assert isinstance(bill["model"], str) and isinstance(bill["targets"], str)
    for key in ("num_params", "r", "adapter_params"):
        assert type(bill[key]) is int and bill[key] > 0, key
    assert set(bill["methods"]) == METHODS
    for method, entry in bill["methods"].items():
        assert entry["parts"] and all(type(v) is int for v in entry["parts"].values()), method
        assert entry["total"] == sum(entry["parts"].values()), method
    kbit = bill["kbit_float32"]
    assert type(kbit["params"]) is int and kbit["bytes"] == 4 * kbit["params"] and isinstance(kbit["what"], str)
    assert kbit["bytes"] in bill["methods"]["qlora"]["parts"].values()  # QLoRA's bill carries the float32 part
    assert kbit["bytes"] in bill["methods"]["qlora_no_dq"]["parts"].values()
    assert all(type(v) is int for v in bill["gpus"].values()) and len(bill["gpus"]) == 3
    assert set(bill["fits"]) == METHODS
    for method, gpus in bill["fits"].items():
        total = bill["methods"][method]["total"]
        assert gpus == [gpu for gpu, usable in bill["gpus"].items() if total <= usable], method
    assert bill["methods"]["qlora"]["total"] < bill["methods"]["qlora_no_dq"]["total"]
    assert seven_b_bill() is not seven_b_bill()  # a fresh copy each time: a caller may change it


def test_exercise_1_shows_the_same_totals(script):
    """The notebook's Part 8 table and sentence, run on the reference solution, print the file's totals."""
    from utils.selfcheck import expect, reveal

    cells = {cid: src for meta, src in script._cells(json.loads(script.SOURCE.read_text(encoding="utf-8")))
             for cid in [meta.get("grade_id")]}
    ns = script.calculator()
    said = []
    ns.update(expect=expect, reveal=reveal, say=said.append, my_qlora_gb=None,
              # the meta-device count (transformers, seconds) is the notebook's own check of this formula
              count_on_meta=lambda shape: sum(ns["llama_parameters"](**shape).values()))
    exec(compile(script.assignment(cells["code_12"], "MEASURED"), "code_12", "exec"), ns)  # noqa: S102
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(cells["code_9"], "code_9", "exec"), ns)  # noqa: S102
    shown = out.getvalue() + "\n".join(said)
    bill = seven_b_bill()
    for method, entry in bill["methods"].items():
        assert f"{entry['total'] / 1e9:.2f} GB" in shown, (method, shown)
        for label, size in entry["parts"].items():
            assert label in shown and f"{size / 1e9:.2f}" in shown, (method, label)
    assert f"{bill['kbit_float32']['params']:,}" in shown
    assert ns["bill_7b"] == bill
