"""`python -m instructor publish`: the student repository points at itself and gives nothing away."""
import json
import pathlib
import re
import subprocess
import sys

import pytest

from instructor.course import publish
from instructor.course.notebooks import ASSIGNMENTS, PLACEHOLDER_REPO, ROOT, notebook_path, read_notebook, setup_cells
from tests.course import solution_cells

REPO, BRANCH = "alice-lab/gpt2-course-2027", "spring"


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    dest = tmp_path_factory.mktemp("published") / "student-repo"
    result = publish.publish(dest, REPO, BRANCH)
    assert re.fullmatch(r"[0-9a-f]{7,}", result["commit"]), result
    return dest


def published_files(tree):
    return {p.relative_to(tree).as_posix(): p for p in tree.rglob("*")
            if p.is_file() and ".git" not in p.relative_to(tree).parts and "__pycache__" not in p.parts}


def test_the_tree_holds_exactly_the_student_files(tree):
    utils = {p.relative_to(ROOT).as_posix() for p in (ROOT / "utils").rglob("*")
             if p.is_file() and "__pycache__" not in p.parts}
    expected = {publish.student_path(a) for a in ASSIGNMENTS} | utils | {
        "README.md", "LICENSE", "colab_setup.py", "requirements.txt", ".gitignore", publish.MARKER}
    assert set(published_files(tree)) == expected
    for forbidden in ("graders", "source", "solution", "autograded", "tests", "instructor", "release"):
        assert not (tree / forbidden).exists()


def solution_lines(assignment):
    """The distinctive lines of every reference answer (what a leak would contain)."""
    nb = read_notebook(notebook_path(assignment))
    # lines every student already has (the release notebooks, utils' usage examples) are not answers
    given = "".join(notebook_path(a, "release").read_text() for a in ASSIGNMENTS) + \
        "".join(p.read_text() for p in (ROOT / "utils").glob("*.py"))
    lines = []
    for cell in nb["cells"]:
        if cell["metadata"].get("nbgrader", {}).get("grade_id") in solution_cells(nb):
            body = "".join(cell["source"]).split("### BEGIN SOLUTION")[1].split("### END SOLUTION")[0]
            lines += [line.strip() for line in body.splitlines()
                      if len(line.strip()) >= 24 and not line.strip().startswith("#")
                      and json.dumps(line.strip())[1:-1] not in given and line.strip() not in given]
    return lines


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_no_answer_and_no_hidden_test_is_published(tree, assignment):
    text = "\n".join(p.read_text(encoding="utf-8", errors="replace") for p in published_files(tree).values())
    lines = solution_lines(assignment)
    assert len(lines) >= 5, "the leak check needs reference lines to look for"
    leaked = [line for line in lines if line in text]
    assert not leaked, f"reference answers of {assignment} are in the student repository: {leaked[:3]}"
    for marker in ("BEGIN SOLUTION", "BEGIN HIDDEN TESTS", "grader.check_", "from graders", "import graders"):
        assert marker not in text


def test_every_badge_and_setup_cell_points_at_the_student_repository(tree):
    files = published_files(tree)
    assert not any(PLACEHOLDER_REPO in p.read_text(errors="replace") for p in files.values()), "placeholder left"
    readme = files["README.md"].read_text()
    for a in ASSIGNMENTS:
        nb = json.loads(files[publish.student_path(a)].read_text())
        want = setup_cells(a, REPO, BRANCH, publish.student_path(a))
        assert ["".join(c["source"]) for c in nb["cells"][:2]] == [c["source"] for c in want]
        badge = f"https://colab.research.google.com/github/{REPO}/blob/{BRANCH}/notebooks/{a}.ipynb"
        assert badge in "".join(nb["cells"][0]["source"]) and badge in readme
        assert f"--branch {BRANCH} https://github.com/{REPO}" in "".join(nb["cells"][1]["source"])
        assert all(c.get("outputs", []) == [] for c in nb["cells"])
        # the nbgrader metadata stays: a submission is graded by its cells' ids and checksums
        assert read_notebook(notebook_path(a, "release"))["cells"][2:] == nb["cells"][2:]


def test_requirements_and_readme_state_the_floors(tree):
    import colab_setup
    requirements = (tree / "requirements.txt").read_text()
    readme = (tree / "README.md").read_text()
    for dist, floor in colab_setup.FLOORS.items():
        assert f"{dist}>={floor}" in requirements and f"{dist} {floor}" in readme


def test_the_published_repository_is_committed_on_its_branch(tree):
    git = lambda *a: subprocess.run(["git", "-C", str(tree), *a], capture_output=True, text=True).stdout.strip()
    assert git("rev-parse", "--abbrev-ref", "HEAD") == BRANCH
    assert git("status", "--porcelain") == ""
    assert "notebooks/ex1_memory.ipynb" in git("ls-files")


def test_republishing_removes_what_the_course_dropped_and_refuses_foreign_folders(tmp_path):
    dest = tmp_path / "repo"
    publish.publish(dest, REPO, git=False)
    (dest / "notebooks" / "ex0_dropped.ipynb").write_text("{}")
    publish.publish(dest, REPO, git=False)
    assert not (dest / "notebooks" / "ex0_dropped.ipynb").exists()
    foreign = tmp_path / "thesis"
    foreign.mkdir()
    (foreign / "chapter1.tex").write_text("precious")
    with pytest.raises(publish.PublishError, match="not written by `instructor publish`"):
        publish.publish(foreign, REPO)
    assert (foreign / "chapter1.tex").read_text() == "precious"
    for bad in ("", "just-a-name", PLACEHOLDER_REPO, "a/b c", "https://github.com/a/b"):
        with pytest.raises(publish.PublishError, match="OWNER/NAME"):
            publish.publish(tmp_path / "x", bad)
    with pytest.raises(publish.PublishError, match="outside the course"):
        publish.publish(ROOT / "published", REPO)


def test_a_stale_or_leaking_release_is_refused(tmp_path, monkeypatch):
    real = read_notebook

    def leaky(path):
        nb = real(path)
        if "release" in pathlib.Path(path).parts:
            nb["cells"][5]["source"] = "### BEGIN SOLUTION\nanswer = 42\n### END SOLUTION"
        return nb

    monkeypatch.setattr(publish, "read_notebook", leaky)
    with pytest.raises(publish.PublishError, match="BEGIN SOLUTION"):
        publish.publish(tmp_path / "repo", REPO)
    assert not (tmp_path / "repo").exists(), "nothing is written when a notebook is refused"


def test_the_command_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "instructor", "publish", str(tmp_path / "r"), "--repo", REPO,
                           "--no-git"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "Published" in done.stdout and f"github.com/{REPO}.git" in done.stdout
    done = subprocess.run([sys.executable, "-m", "instructor", "publish", str(tmp_path / "r"), "--repo", "nope"],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2 and "OWNER/NAME" in done.stdout and "Traceback" not in done.stdout + done.stderr
