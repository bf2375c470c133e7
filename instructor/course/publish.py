"""`python -m instructor publish DEST --repo OWNER/NAME`: the repository students open in Colab.

It holds the release notebooks (badges and setup cells pointing at OWNER/NAME), utils/ with its data,
colab_setup.py, a requirements file built from colab_setup's floors, a student README and the licence.
Nothing else: graders/, source/, solution/, autograded/ and tests/ hold the answers. Every notebook is
checked before it is written (no solution, no hidden test, no output), and DEST is rewritten whole, so a
file dropped from the course disappears from the student repository too."""
import json
import pathlib
import re
import shutil
import subprocess
import time

import colab_setup
from instructor.course.notebooks import ASSIGNMENTS, PLACEHOLDER_REPO, ROOT, colab_url, notebook_path, read_notebook, setup_cells

MARKER = ".course-published"  # written into DEST; publish only rewrites a folder that holds it (or an empty one)
REPO_PATTERN = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}$")
FORBIDDEN_IN_NOTEBOOKS = ("### BEGIN SOLUTION", "### END SOLUTION", "### BEGIN HIDDEN TESTS", "from graders",
                          "import graders")
UTILS_SKIP = shutil.ignore_patterns("__pycache__", "*.pyc")


class PublishError(Exception):
    pass


def student_path(assignment: str) -> str:
    """Where a notebook lies in the student repository."""
    return f"notebooks/{assignment}.ipynb"


def notebook_title(nb: dict) -> str:
    for cell in nb["cells"]:
        source = "".join(cell["source"])
        if cell["cell_type"] == "markdown" and source.startswith("# "):
            return source.splitlines()[0][2:].strip()
    raise PublishError("a release notebook has no '# Title' heading")


def student_notebook(assignment: str, repo: str, branch: str) -> dict:
    """The release notebook with its first two cells pointing at `repo`, after checking it gives nothing away."""
    nb = read_notebook(notebook_path(assignment, "release"))
    placeholder = setup_cells(assignment)
    if ["".join(c["source"]) for c in nb["cells"][:2]] != [c["source"] for c in placeholder]:
        raise PublishError(f"release/{assignment} does not start with the course's badge and setup cells: "
                           "run `make build` after editing source/")
    for cell in nb["cells"]:
        text = "".join(cell["source"])
        leaked = [marker for marker in FORBIDDEN_IN_NOTEBOOKS if marker in text]
        if leaked or cell.get("outputs"):
            raise PublishError(f"release/{assignment} cell {cell.get('id')} holds "
                               f"{leaked or 'outputs'}: run `make build` and `make test`")
    for cell, want in zip(nb["cells"], setup_cells(assignment, repo, branch, student_path(assignment))):
        cell["source"] = want["source"]
    return nb


def requirements_text() -> str:
    floors = "\n".join(f"{dist}>={version}" for dist, version in colab_setup.FLOORS.items())
    return ("# To run the notebooks on your own machine (Colab needs none of this: the setup cell does it).\n"
            "# Install PyTorch first (https://pytorch.org), then: pip install -r requirements.txt\n"
            f"torch\n{floors}\n" + "\n".join(colab_setup.ANY_VERSION) + "\njupyterlab\n")


def readme_text(titles: dict, repo: str, branch: str) -> str:
    rows = "\n".join(
        f"| {i} | [{title}]({student_path(a)}) | "
        f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
        f"({colab_url(student_path(a), repo, branch)}) |"
        for i, (a, title) in enumerate(titles.items(), 1))
    floors = ", ".join(f"{dist} {version}" for dist, version in colab_setup.FLOORS.items())
    return f"""# LoRA, quantization and inference on GPT-2

Five notebooks that take you from "why can't I finetune a 7B model on my GPU?" to finetuning GPT-2 with
LoRA and running it in 8-bit and 4-bit. Each asks you to predict before you run, to fill in the cells
marked `# YOUR CODE HERE`, and checks your answer at once in the cell below it.

| # | exercise | open |
| --- | --- | --- |
{rows}

## Your first five minutes

1. Click an exercise's *Open in Colab* badge. Exercises 1 to 3 run on a CPU; for 4 and 5 choose
   *Runtime > Change runtime type > T4 GPU* first (free).
2. Run the first cell. It clones this repository into the runtime, installs or upgrades what Colab
   lacks (never torch: Colab's own CUDA build stays), and prints the versions, your GPU (or that there is
   none) and the dtype quantized layers will compute in. It takes under a minute.
3. Work top to bottom. *Runtime > Run all* runs to the end even on a CPU runtime: the GPU-only
   measurements say what they would measure and move on.
4. Hand in the notebook itself: *File > Download > Download .ipynb*, keeping its name
   (for example `ex1_memory.ipynb`). Do not delete or copy cells: the grader finds your answers by them.

The grader re-runs your notebook from the top with checks you have not seen, on other inputs, so
an answer that only works for the printed example loses its points.

## Versions

The setup cell checks these and, in Colab, upgrades what is older: {floors} (the oldest the notebooks
are tested with), with whatever torch is installed. To work on your own machine instead: install
PyTorch, then `pip install -r requirements.txt`, then open the notebooks in Jupyter. Without internet
access the notebooks use an offline stand-in for GPT-2 (the real architecture, random weights) and a
bundled excerpt of Shakespeare, and say so.
"""


def files(repo: str, branch: str) -> dict:
    """relative path -> text of every file the student repository holds, except utils/ (copied)."""
    titles, out = {}, {}
    for a in ASSIGNMENTS:
        nb = student_notebook(a, repo, branch)
        titles[a] = notebook_title(nb)
        out[student_path(a)] = json.dumps(nb, indent=1, ensure_ascii=False) + "\n"
    out["README.md"] = readme_text(titles, repo, branch)
    out["requirements.txt"] = requirements_text()
    out["colab_setup.py"] = (ROOT / "colab_setup.py").read_text(encoding="utf-8")
    out["LICENSE"] = (ROOT / "LICENSE").read_text(encoding="utf-8")
    out[".gitignore"] = "__pycache__/\n.ipynb_checkpoints/\n*.pyc\n"
    return out


def _clear(dest: pathlib.Path) -> None:
    if dest.exists() and any(p.name != ".git" for p in dest.iterdir()) and not (dest / MARKER).exists():
        raise PublishError(f"{dest} is not empty and was not written by `instructor publish` "
                           f"(no {MARKER}); choose an empty or new folder")
    dest.mkdir(parents=True, exist_ok=True)
    for path in dest.iterdir():
        if path.name == ".git":
            continue
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()


def _git(dest: pathlib.Path, *args) -> subprocess.CompletedProcess:
    identity = ["-c", "user.name=Course publisher", "-c", "user.email=course@localhost"]
    return subprocess.run(["git", *identity, *args], cwd=dest, capture_output=True, text=True)


def commit(dest: pathlib.Path, branch: str, message: str) -> str:
    """Commit the tree on `branch` (a new repository if DEST has none); return the commit, or why not."""
    if shutil.which("git") is None:
        return "git not found: the files are written, not committed"
    if not (dest / ".git").exists():
        _git(dest, "init", "--quiet")
    _git(dest, "symbolic-ref", "HEAD", f"refs/heads/{branch}")  # commit on `branch`, whatever was checked out
    _git(dest, "add", "--all")
    done = _git(dest, "commit", "--quiet", "--allow-empty", "-m", message)
    if done.returncode != 0:
        return "git commit failed: " + done.stderr.strip()
    return _git(dest, "rev-parse", "--short", "HEAD").stdout.strip()


def publish(dest, repo: str, branch: str = "main", git: bool = True) -> dict:
    """Write the student repository into `dest`; return {"files": n, "commit": ...}."""
    if not REPO_PATTERN.match(repo) or repo == PLACEHOLDER_REPO:
        raise PublishError(f"--repo must be the student repository as OWNER/NAME on GitHub, got {repo!r}")
    if not re.fullmatch(r"[A-Za-z0-9._/-]+", branch):
        raise PublishError(f"--branch {branch!r} is not a branch name")
    dest = pathlib.Path(dest).resolve()
    if dest == ROOT or ROOT in dest.parents:
        raise PublishError("DEST must be outside the course repository (it would publish into itself)")
    written = files(repo, branch)  # everything checked before DEST is touched
    _clear(dest)
    for rel, text in written.items():
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / rel).write_text(text, encoding="utf-8")
    shutil.copytree(ROOT / "utils", dest / "utils", ignore=UTILS_SKIP)
    source_commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                   text=True).stdout.strip() or "unknown"
    (dest / MARKER).write_text(json.dumps({"repo": repo, "branch": branch, "course_commit": source_commit,
                                           "published": time.strftime("%Y-%m-%d %H:%M:%S")}, indent=1) + "\n")
    n_files = sum(1 for p in dest.rglob("*") if p.is_file() and ".git" not in p.relative_to(dest).parts)
    result = {"files": n_files, "dest": str(dest), "commit": None}
    if git:
        result["commit"] = commit(dest, branch, f"Publish the course (from course commit {source_commit})")
    return result


def add_arguments(parser) -> None:
    parser.add_argument("dest", metavar="DEST", help="folder for the student repository (new, empty, or published before)")
    parser.add_argument("--repo", required=True, metavar="OWNER/NAME", help="the student repository on GitHub")
    parser.add_argument("--branch", default="main", help="the branch students open (default: main)")
    parser.add_argument("--no-git", action="store_true", help="write the files only, without committing")


def run(args) -> int:
    try:
        result = publish(args.dest, args.repo, args.branch, git=not args.no_git)
    except PublishError as error:
        print(f"publish: {error}")
        return 2
    print(f"Published {result['files']} files to {result['dest']} for {args.repo} ({args.branch})"
          + (f", commit {result['commit']}" if result["commit"] else ""))
    print(f"Next: git -C {result['dest']} remote add origin https://github.com/{args.repo}.git && "
          f"git -C {result['dest']} push -u origin {args.branch}")
    return 0
