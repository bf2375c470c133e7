"""The course's one bill for finetuning a 7B model, as Exercise 1's memory calculator computes it.

    from utils.bill import seven_b_bill
    bill = seven_b_bill()
    bill["methods"]["qlora"]["total"]   # bytes

Exercise 1 builds this bill in front of the student from their own functions (its Part 8); the course computed it
once with that notebook's reference solution (scripts/seven_b_bill.py) and keeps the result in
utils/data/seven_b_bill.json, so every other notebook quotes the same figures. Keys:

- "model", "num_params", "r", "adapter_params", "targets": the model (Llama 2 7B, counted from its architecture)
  and the LoRA adapter (rank r, on the matrices `targets` names);
- "methods": {"full" | "lora" | "qlora" | "qlora_no_dq": {"parts": {label: bytes}, "total": bytes}}, where
  "qlora" uses NF4 with double quantization and "qlora_no_dq" without it; weights, gradients and optimizer states
  only, activations not included;
- "kbit_float32": {"params", "bytes", "what"}: what QLoRA keeps out of NF4 and
  `peft.prepare_model_for_kbit_training` casts to float32 (embedding, output head, norms);
- "gpus": {name: usable bytes}; "fits": {method: [the GPUs whose usable memory holds its total]}."""
import json
import pathlib

PATH = pathlib.Path(__file__).resolve().parent / "data" / "seven_b_bill.json"


def seven_b_bill() -> dict:
    """A fresh copy of the bill (change it freely)."""
    return json.loads(PATH.read_text(encoding="utf-8"))
