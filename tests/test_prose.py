"""Every sentence true to its run: a figure in a notebook's typed prose is one the notebook is given, never one
it measures. Results reach the student through `say(...)` (utils/prose.py), computed from the run's values, so
a CPU run, a GPU run and the offline models each read what they measured.

A figure in a Markdown cell passes when the same number is written in the notebook's code (an input: 7e9
parameters, blocks of 64, a rank of 8), or when GIVEN names it with where it comes from."""
import re

import pytest

from instructor.course.notebooks import ASSIGNMENTS, notebook_path, read_notebook

# Figures a notebook takes from the lecture or the literature and does not compute, each with its source;
# "*" holds those every notebook may use.
GIVEN = {
    "*": {
        "768": "GPT-2 small's width (GPT2Config's default n_embd)",
        "2304": "GPT-2's c_attn output width, 3 x 768", "2,304": "the same, written with a comma",
        "3072": "GPT-2's MLP width, 4 x 768",
        "50,257": "GPT-2's vocabulary (GPT2Config's default vocab_size)",
        "1,024": "GPT-2's context (n_positions)", "1024": "the same",
        "2021": "LoRA's year (Hu et al.)", "2022": "LLM.int8()'s year (Dettmers et al.)",
        "2023": "QLoRA's year (Dettmers et al.)", "2106.09685": "LoRA's arXiv number",
    },
    "ex1_memory": {
        "124": "GPT-2 small's name: the 124M model",
        "127": "int8's largest value, 2**7 - 1",
        "1,073,741,824": "one GiB: 2**30 bytes, by definition",
        "16": "a T4's memory on paper: 16 GB (NVIDIA's T4 datasheet)",
        "48": "the QLoRA paper finetunes a 65B model on one 48 GB GPU (Dettmers et al., 2023, arXiv 2305.14314)",
        "109": "the lecture's r=32 adapter file, adapter_model.safetensors: about 109 MB (seed 004, lecture notes)",
    },
    "ex2_quantization": {
        "589,824": "GPT-2 small's query block, 768 x 768 weights",
    },
    "ex3_lora_from_scratch": {
        "10,000": "LoRA (Hu et al., 2021, abstract): 10,000 times fewer trainable parameters than full finetuning "
                  "of GPT-3 175B (../shared/SPEC.md)",
        "124,439,808": "GPT-2 small's parameter count, tied embeddings counted once (GPT2LMHeadModel's "
                       "sum of p.numel(); judges/ex3_lora_from_scratch.py GPT2_SMALL_PARAMS)",
    },
    "ex5_quantized_inference": {
        "2024": "DoRA's year (Liu et al., 2024, arXiv 2402.09353)",
    },
}

# A figure: digits (with , _ or . inside), not glued to letters or hyphens, which make names: GPT-2, T4,
# float16, int8, 8-bit, A100, c_fc. Small whole numbers (up to 12) are counts and names in prose ("Part 4",
# "2 bytes", "three") and are left alone; so is maths between $ signs, which states rules, not results.
FIGURE = re.compile(r"(?<![\w.\-/^{])(\d[\d,_]*(?:\.\d+)?)(?![\w\-]|\.\d|\^)")
MATH = re.compile(r"\$[^$]*\$")


def _value(token):
    token = token.replace(",", "").replace("_", "")
    try:
        return float(token)
    except ValueError:
        return None


def figures(text):
    text = MATH.sub(" ", re.sub(r"`[^`]*`", " ", text))
    for token in FIGURE.findall(text):
        value = _value(token)
        if value is not None and not (value.is_integer() and value <= 12):
            yield token.rstrip(".,"), value


def _code_numbers(notebook):
    numbers = set()
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            for token in re.findall(r"(?<![\w.])\d[\d_]*(?:\.\d+)?(?:e-?\d+)?", "".join(cell["source"])):
                value = _value(token)
                if value is not None:
                    numbers.add(value)
    return numbers


def typed_results(assignment):
    notebook = read_notebook(notebook_path(assignment, "release"))
    named = {**GIVEN["*"], **GIVEN.get(assignment, {})}
    given = _code_numbers(notebook) | {_value(k) for k in named}
    found = []
    for index, cell in enumerate(notebook["cells"]):
        if cell["cell_type"] != "markdown":
            continue
        for token, value in figures("".join(cell["source"])):
            if value not in given:
                found.append(f"cell {index}: {token}")
    return found


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_prose_states_no_figure_the_notebook_does_not_compute(assignment):
    found = typed_results(assignment)
    assert not found, (f"release/{assignment} types figures into its prose; say them from the run with "
                       f"utils.say, or name them in GIVEN with their source: {found}")
