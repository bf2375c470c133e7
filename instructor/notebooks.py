"""What every course notebook shares: the assignments, the Open-in-Colab badge and the setup cell."""
import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent

# In course order. Each is an nbgrader assignment holding one notebook of the same name.
ASSIGNMENTS = [
    "ex1_memory",
    "ex2_quantization",
    "ex3_lora_from_scratch",
    "ex4_peft_finetuning",
    "ex5_quantized_inference",
]

# The repository students open in Colab: it needs release/, utils/ and colab_setup.py (never source/,
# solution/ or graders/). Change it here; tests/test_notebooks.py checks every notebook agrees.
COURSE_REPO = "your-org/lora-quant-course"
CLONE_DIR = COURSE_REPO.split("/")[1]

# Grade cells whose grade_id starts with this need a CUDA GPU at grading time.
CUDA_TEST_PREFIX = "test_cuda_"

# nbgrader's course_id, in every gradebook (the course's and each grading sandbox's).
COURSE_ID = "lora-quant-course"
# `make course` grades the solutions as this student (autograded/reference/); never one of the class.
REFERENCE_STUDENT = "reference"


def notebook_path(assignment: str, step: str = "source", root=ROOT) -> pathlib.Path:
    return pathlib.Path(root) / step / assignment / f"{assignment}.ipynb"


def colab_url(assignment: str) -> str:
    return (f"https://colab.research.google.com/github/{COURSE_REPO}/blob/main/"
            f"release/{assignment}/{assignment}.ipynb")


SETUP_SOURCE = f'''# Setup: run this cell first. In Colab it fetches the course helpers and installs what is missing.
import os, sys
root = os.environ.get("COURSE_ROOT") or next(
    (p for p in ("../..", "..", "{CLONE_DIR}") if os.path.exists(os.path.join(p, "colab_setup.py"))), None)
if root is None:  # a fresh Colab runtime
    !git clone --quiet --depth 1 https://github.com/{COURSE_REPO}
    root = "{CLONE_DIR}"
sys.path.insert(0, os.path.abspath(root))
import colab_setup
colab_setup.setup()'''


def setup_cells(assignment: str) -> list:
    """The badge cell and the setup cell every notebook starts with, as plain dicts."""
    badge = (f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
             f"({colab_url(assignment)})")
    return [{"cell_type": "markdown", "source": badge}, {"cell_type": "code", "source": SETUP_SOURCE}]


def read_notebook(path) -> dict:
    return json.loads(pathlib.Path(path).read_text(encoding="utf-8"))


def grade_cells(nb: dict) -> dict:
    """grade_id -> points for every autograded test cell of a notebook."""
    out = {}
    for cell in nb["cells"]:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("grade") and cell["cell_type"] == "code":
            out[meta["grade_id"]] = meta.get("points", 0)
    return out


def cuda_test_cells(assignment: str, root=ROOT) -> list:
    return [g for g in grade_cells(read_notebook(notebook_path(assignment, root=root)))
            if g.startswith(CUDA_TEST_PREFIX)]
