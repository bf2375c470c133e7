"""The nbgrader steps this course uses, run as nbgrader's own commands in a course root."""
import os
import pathlib
import shutil
import subprocess
import sys

from instructor.course.notebooks import COURSE_ID, ROOT, notebook_path

NBGRADER = [sys.executable, "-m", "nbgrader"]


class NbgraderFailed(RuntimeError):
    pass


def _run(args, root, env=None):
    # nbgrader runs `alembic` from PATH: put this interpreter's scripts first (a venv may not be activated).
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    result = subprocess.run([*NBGRADER, *args], cwd=root, capture_output=True, text=True,
                            env={**os.environ, "PATH": path, "COURSE_ROOT": str(root), **(env or {})})
    if "Exception while loading config file" in result.stderr:  # nbgrader would carry on with its defaults
        raise NbgraderFailed(f"`nbgrader {' '.join(args)}` could not load nbgrader_config.py:\n{result.stderr[-3000:]}")
    if result.returncode != 0:
        raise NbgraderFailed(f"`nbgrader {' '.join(args)}` failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    return result


def generate_release(assignment, root=ROOT):
    """source/ -> release/ (student version: solutions stubbed out, hidden tests removed)."""
    _run(["generate_assignment", assignment, "--force", "--create"], root)


def generate_solution(assignment, root=ROOT):
    """source/ -> solution/ (solutions kept, outputs cleared)."""
    _run(["generate_solution", assignment, "--force"], root)


def submit(assignment, student, notebook_file, root=ROOT):
    """Place a notebook where nbgrader expects a submission: submitted/<student>/<assignment>/."""
    dest = pathlib.Path(root) / "submitted" / student / assignment
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    shutil.copy(notebook_file, dest / f"{assignment}.ipynb")


def autograde(assignment, student, root=ROOT, env=None, options=()):
    """submitted/ -> autograded/, scores into the gradebook (`student` may be a glob). Returns nbgrader's log."""
    return _run(["autograde", assignment, "--student", student, "--create", "--force", *options], root, env).stderr


def gradebook_path(root=ROOT) -> pathlib.Path:
    return pathlib.Path(root) / "gradebook.db"


def gradebook(root=ROOT):
    """The course's nbgrader Gradebook, to use in a `with`. Make a new one through `_run` (nbgrader's CLI),
    not here: creating the database runs `alembic`, which must be on PATH."""
    from nbgrader.api import Gradebook
    return Gradebook(f"sqlite:///{gradebook_path(root)}", COURSE_ID)


def cell_scores(assignment, student, root=ROOT) -> dict:
    """grade_id -> (score, max_score) for one autograded submission."""
    with gradebook(root) as gb:
        nb = gb.find_submission_notebook(assignment, assignment, student)
        return {g.name: (g.score, g.max_score) for g in nb.grades}


def autograded_notebook(assignment, student, root=ROOT) -> pathlib.Path:
    return notebook_path(assignment, f"autograded/{student}", root)
