"""The course as a student meets it, as close to Colab as a CPU machine allows.

A fresh virtual environment gets torch and exactly the oldest versions colab_setup accepts (one of them
a step older still, so setup must upgrade it); the course is published and cloned over a file:// URL
standing in for GitHub (git's url.<base>.insteadOf, so the setup cell runs unchanged); then every
release notebook, with its answers filled in, runs top to bottom in its own empty folder and fresh
kernel, as Colab's Run all does on a CPU runtime."""
import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest

import colab_setup
from instructor.course import publish
from instructor.course.notebooks import ASSIGNMENTS, CUDA_TEST_PREFIX, ROOT, grade_cells, notebook_path, read_notebook

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("student_path")]

REPO, BRANCH = "alice-lab/gpt2-course", "main"
TORCH = "torch==2.13.0"  # what this machine's pip takes from local disk; Colab brings its own
UPGRADED = ("accelerate", "1.9.0")  # installed one release below its floor: setup must upgrade it
JUPYTER = ["nbclient", "ipykernel", "matplotlib", "tqdm"]  # Colab has these; any version


def venv_python(venv: pathlib.Path) -> str:
    return str(venv / "bin" / "python")


def _find_links() -> list:
    """Where this machine's pip finds wheels (torch's CPU build, here): uv reads no pip configuration."""
    configured = subprocess.run([sys.executable, "-m", "pip", "config", "get", "global.find-links"],
                                capture_output=True, text=True).stdout
    return sorted(set((configured + " " + os.environ.get("PIP_FIND_LINKS", "")).split()))


def install(venv, *requirements):
    """The fresh environment's packages: with uv where the checkout has it (`make` installs it: seconds), else
    pip. Neither byte-compiles all of torch; the runs compile what they import."""
    if importlib.util.find_spec("uv"):
        command = [sys.executable, "-m", "uv", "pip", "install", "--quiet", "--python", venv_python(venv),
                   *[f"--find-links={link}" for link in _find_links()], *requirements]
    else:
        command = [venv_python(venv), "-m", "pip", "install", "--quiet", "--no-compile", *requirements]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]


def answered(assignment: str, published: pathlib.Path) -> dict:
    """The published notebook with every answer cell holding the reference answer (markers removed)."""
    nb = json.loads(published.read_text())
    reference = {c["metadata"]["nbgrader"]["grade_id"]: "".join(c["source"])
                 for c in read_notebook(notebook_path(assignment))["cells"]
                 if c["metadata"].get("nbgrader", {}).get("solution")}
    filled = 0
    for cell in nb["cells"]:
        grade_id = cell["metadata"].get("nbgrader", {}).get("grade_id")
        if grade_id in reference:
            cell["source"] = "\n".join(line for line in reference[grade_id].splitlines()
                                       if line.strip() not in ("### BEGIN SOLUTION", "### END SOLUTION"))
            filled += 1
    assert filled == len(reference)
    return nb


# session, not module: a worker runs other modules' tests in between, and pytest would build a
# module fixture again after each interruption (it did, doubling the cost)
@pytest.fixture(scope="session")
def student_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("student")
    published = work / "published"
    publish.publish(published, REPO, BRANCH)

    floors = [f"{dist}=={version}" for dist, version in colab_setup.FLOORS.items() if dist != UPGRADED[0]]
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    install(venv, TORCH, *floors, f"{UPGRADED[0]}=={UPGRADED[1]}", *JUPYTER)
    torch_before = installed_version(venv, "torch")

    # the upgrade may take any version at or above the floor; the test holds it at the floor itself
    cap = work / "cap.txt"
    cap.write_text(f"{UPGRADED[0]}=={colab_setup.FLOORS[UPGRADED[0]]}\n")
    env = {k: v for k, v in os.environ.items() 
           if not k.startswith(("COURSE_ROOT", "PYTHON", "VIRTUAL_ENV", "MPLBACKEND"))}
    env.update({
        "HOME": str(work / "home"), "COURSE_CACHE": str(work / "cache"), "COURSE_INSTALL": "1",
        "PIP_CONSTRAINT": str(cap),
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
        # GitHub is out of reach: git fetches the published tree instead, the setup cell unchanged
        "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": f"url.{published.as_uri()}.insteadOf",
        "GIT_CONFIG_VALUE_0": f"https://github.com/{REPO}",
    })
    (work / "home").mkdir()
    notebooks = []
    for a in ASSIGNMENTS:
        runtime = work / "content" / a  # each notebook in a fresh "/content"
        runtime.mkdir(parents=True)
        path = runtime / f"{a}.ipynb"
        path.write_text(json.dumps(answered(a, published / publish.student_path(a))))
        notebooks.append(str(path))
    results = work / "results.json"
    done = subprocess.run([venv_python(venv), str(ROOT / "tests" / "run_as_student.py"), str(results), *notebooks],
                          capture_output=True, text=True, env=env, cwd=work)
    assert done.returncode == 0, done.stderr[-3000:]
    print(done.stdout)
    return {"results": json.loads(results.read_text()), "work": work,
            "torch": (torch_before, installed_version(venv, "torch")),
            "versions": {dist: installed_version(venv, dist) for dist in colab_setup.FLOORS}}


def installed_version(venv, dist: str) -> str:
    """The version pip recorded for `dist` in the venv (its metadata: importing torch to ask costs 3 s)."""
    return subprocess.run([venv_python(venv), "-c", f"import importlib.metadata as m; print(m.version({dist!r}))"],
                          capture_output=True, text=True).stdout.strip()


def outputs(work, assignment) -> list:
    nb = json.loads((work / "content" / assignment / f"{assignment}.ipynb").read_text())
    """The text each code cell printed (one string per cell)."""
    return ["".join("".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", ""))
                    for o in c.get("outputs", [])) for c in nb["cells"] if c["cell_type"] == "code"]


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_run_all_reaches_the_end_on_a_cpu(student_run, assignment):
    result = student_run["results"][assignment]
    assert result["error"] is None, result["error"]
    nb = json.loads((student_run["work"] / "content" / assignment / f"{assignment}.ipynb").read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(c["execution_count"] for c in code), "every code cell ran"
    assert not any(o.get("output_type") == "error" for c in code for o in c["outputs"])


def test_setup_cloned_the_published_tree_and_reports_the_machine(student_run):
    work = student_run["work"]
    for a in ASSIGNMENTS:
        clone = work / "content" / a / REPO.split("/")[1]
        assert (clone / "colab_setup.py").exists() and not (clone / "graders").exists()
        setup_output = outputs(work, a)[0]
        assert "CPU only" in setup_output and "compute dtype for quantized layers here: float32" in setup_output
        assert "setup took" in setup_output


def test_setup_upgraded_what_was_older_and_never_touched_torch(student_run):
    dist, older = UPGRADED
    floor = colab_setup.FLOORS[dist]
    first = outputs(student_run["work"], ASSIGNMENTS[0])[0]
    assert f"Installing: {dist}>={floor} ({older} is older than {floor})" in first
    assert student_run["versions"] == colab_setup.FLOORS, "every package ends at its floor"
    before, after = student_run["torch"]
    assert before == after and before.startswith("2.13.0")
    for a in ASSIGNMENTS[1:]:
        assert "Installing" not in outputs(student_run["work"], a)[0]
        assert f"{dist} {floor}" in outputs(student_run["work"], a)[0]


def test_gpu_only_parts_say_what_they_would_measure(student_run):
    text = "\n".join(outputs(student_run["work"], "ex5_quantized_inference"))
    cuda_cells = [g for g in grade_cells(read_notebook(notebook_path("ex5_quantized_inference")))
                  if g.startswith(CUDA_TEST_PREFIX)]
    assert text.count("SKIPPED on this CPU runtime") == len(cuda_cells) and "NOT MEASURED" in text
    assert "kept the checkpoint's dtype" in text  # computed from the loaded models, transformers 5's behaviour
    assert "NOT MEASUR" in "\n".join(outputs(student_run["work"], "ex4_peft_finetuning"))

