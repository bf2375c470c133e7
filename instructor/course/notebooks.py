"""What every course notebook shares: the assignments, the Open-in-Colab badge and the setup cell."""
import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]  # instructor/course/notebooks.py -> the course root

# In course order. Each is an nbgrader assignment holding one notebook of the same name.
ASSIGNMENTS = [
    "ex1_memory",
    "ex2_quantization",
    "ex3_lora_from_scratch",
    "ex4_peft_finetuning",
    "ex5_quantized_inference",
]

# The student repository is written by `python -m instructor publish DEST --repo OWNER/NAME`, which points
# every badge and setup cell at OWNER/NAME. The notebooks in this repository name a placeholder instead
# (tests/test_publish.py checks a published tree holds none of it).
PLACEHOLDER_REPO = "your-org/lora-quant-course"

# Grade cells whose grade_id starts with this need a CUDA GPU at grading time.
CUDA_TEST_PREFIX = "test_cuda_"

# nbgrader's course_id, in every gradebook (the course's and each grading sandbox's).
COURSE_ID = "lora-quant-course"
# `make course` grades the solutions as this student (autograded/reference/); never one of the class.
REFERENCE_STUDENT = "reference"


def notebook_path(assignment: str, step: str = "source", root=ROOT) -> pathlib.Path:
    return pathlib.Path(root) / step / assignment / f"{assignment}.ipynb"


def colab_url(path: str, repo: str = PLACEHOLDER_REPO, branch: str = "main") -> str:
    """The Open-in-Colab address of the notebook at `path` in the student repository."""
    return f"https://colab.research.google.com/github/{repo}/blob/{branch}/{path}"


def setup_source(repo: str = PLACEHOLDER_REPO, branch: str = "main") -> str:
    """The setup cell: find the course's helpers beside the notebook, or clone the student repository."""
    clone_dir = repo.split("/")[1]
    return f'''# Setup: run this cell first. In Colab it fetches the course helpers and installs what is missing.
import os, sys
root = os.environ.get("COURSE_ROOT") or next(
    (p for p in ("../..", "..", "{clone_dir}") if os.path.exists(os.path.join(p, "colab_setup.py"))), None)
if root is None:  # a fresh Colab runtime
    !git clone --quiet --depth 1 --branch {branch} https://github.com/{repo}
    root = "{clone_dir}"
sys.path.insert(0, os.path.abspath(root))
import colab_setup
colab_setup.setup()'''


def setup_cells(assignment: str, repo: str = PLACEHOLDER_REPO, branch: str = "main",
                path: str = None) -> list:
    """The badge cell and the setup cell every notebook starts with, as plain dicts.

    `path`: where the notebook lies in the student repository (default: this repository's release/)."""
    path = path or f"release/{assignment}/{assignment}.ipynb"
    badge = (f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
             f"({colab_url(path, repo, branch)})")
    return [{"cell_type": "markdown", "source": badge}, {"cell_type": "code", "source": setup_source(repo, branch)}]


def read_notebook(path) -> dict:
    """A notebook as a dict, each cell's source one string: Jupyter saves sources as lists of lines (nbformat
    allows both), and a source notebook saved from its Create Assignment toolbar must read like one edited here."""
    nb = json.loads(pathlib.Path(path).read_text(encoding="utf-8"))
    for cell in nb.get("cells", []):
        if isinstance(cell.get("source"), list):
            cell["source"] = "".join(cell["source"])
    return nb


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
