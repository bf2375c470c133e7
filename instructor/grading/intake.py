"""A first look at a submitted notebook, before any of it runs.

Is it a notebook at all, is it this exercise's notebook, and is its grading structure intact?
What can be repaired is repaired (the grade is then "what is left"), every repair is written down for
the student's feedback, and what cannot be graded is rejected with a reason instead of a zero with none:

- a file that is too large, not JSON, or not a Jupyter notebook: rejected;
- another exercise's notebook, or one with none of this exercise's cells: rejected;
- test cells and the course's own cells that were deleted: put back from the release version;
- test cells and course cells that were edited (source, type or grading metadata): restored;
- cells claiming grading metadata the exercise doesn't have, or copies of a graded cell: demoted
  to ordinary code, so they can neither add points nor confuse nbgrader.

Code that reaches for the grading machinery (`graders`, `sys.modules`, `builtins`...) is flagged
for the instructor; it is not penalised here (instructor/grading/kernel.py deals with what it does).
"""
import contextlib
import copy
import dataclasses
import json
import re
import threading
import warnings

import nbformat

from instructor.course.notebooks import ASSIGNMENTS, ROOT, notebook_path, read_notebook, setup_cells

MAX_BYTES = 64 * 2**20
HIDDEN_TESTS = re.compile(r"### BEGIN HIDDEN TESTS.*?### END HIDDEN TESTS\n?", re.S)
REACHES_FOR_GRADING = re.compile(r"\b(graders|judges|gradebook|_collect|sys\.modules|builtins|ctypes|set_custom_exc|"
                                 r"__import__|importlib)\b")


_QUIET = threading.RLock()  # re-entrant: quietly() inside quietly() must not wait for itself


@contextlib.contextmanager
def quietly():
    """Warnings off, one thread at a time: catch_warnings() swaps a process-wide list of filters, so a worker
    thread leaving it while the main thread is inside would drop the main thread's filters."""
    with _QUIET, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@dataclasses.dataclass
class Intake:
    notebook: dict = None  # what to grade; None when rejected
    rejected: str = None  # why nothing can be graded
    notes: list = dataclasses.field(default_factory=list)  # what was repaired, for the student
    flags: list = dataclasses.field(default_factory=list)  # worth an instructor's look


def _grade_id(cell):
    return cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")


def answer_ids(nb) -> set:
    """The ids of answer and test cells: what tells one exercise from another (`setup` or `md_1` do not)."""
    ids = set()
    for cell in nb.get("cells", []):
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("grade_id") and (meta.get("solution") or meta.get("grade")):
            ids.add(meta["grade_id"])
    return ids


BADGE = re.compile(r"colab\.research\.google\.com/github/([\w.-]+/[\w.-]+)/blob/([\w./-]+?)/(notebooks/[\w.-]+\.ipynb)\)")
CLONE = re.compile(r"--branch ([\w./-]+) https://github\.com/([\w.-]+/[\w.-]+)\n")


def _published(cell, grade_id: str, assignment: str) -> bool:
    """Is `cell` the course's badge or setup cell as `python -m instructor publish --repo OWNER/NAME` wrote it
    for the student repository? (Then it is the course's own cell, pointing at that repository.)"""
    if grade_id == "colab_badge":
        found = BADGE.search(cell.source)
        repo, branch, path = found.groups() if found else (None, None, None)
        index = 0
    elif grade_id == "setup":
        found = CLONE.search(cell.source)
        branch, repo = found.groups() if found else (None, None)
        path, index = None, 1
    else:
        return False
    if repo is None:
        return False
    return cell.source.rstrip() == setup_cells(assignment, repo, branch, path)[index]["source"].rstrip()


def _without_hidden_tests(source: str) -> str:
    return HIDDEN_TESTS.sub("", source)


def _parse(data: bytes):
    """(notebook, None) or (None, why it is not one)."""
    if len(data) > MAX_BYTES:
        return None, (f"the file is {len(data) / 2**20:,.0f} MB; the largest accepted is {MAX_BYTES / 2**20:.0f} MB "
                      "(clear the outputs, Edit > Clear all outputs, and submit again)")
    try:
        text = data.decode("utf-8")
        raw = json.loads(text)
    except UnicodeDecodeError:
        return None, "the file is not a notebook: it is not text (was a PDF or an archive submitted?)"
    except json.JSONDecodeError as error:
        return None, (f"the file is not a valid notebook: its JSON is broken at line {error.lineno}, column "
                      f"{error.colno} ({error.msg}). Download it again from Colab (File > Download > .ipynb)")
    if not isinstance(raw, dict) or not isinstance(raw.get("cells"), list):
        return None, "the file is JSON but not a Jupyter notebook (it has no list of cells)"
    try:
        with quietly():  # missing cell ids and such: normalize() fixes them
            nb = nbformat.reads(text, as_version=4)
            nbformat.validator.normalize(nb)
            nbformat.validate(nb)
    except Exception as error:  # noqa: BLE001 - nbformat raises several kinds; all mean "not a notebook"
        first = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        return None, f"the file is not a valid Jupyter notebook ({first})"
    return nb, None


def _identity_problem(nb, assignment: str):
    """None if `nb` is `assignment`'s notebook, else why not."""
    ids = answer_ids(nb)
    if ids & answer_ids(read_notebook(notebook_path(assignment, "release"))):
        return None
    overlap = {a: len(ids & answer_ids(read_notebook(notebook_path(a, "release")))) for a in ASSIGNMENTS}
    other = max(overlap, key=overlap.get)
    if overlap[other]:
        return f"this is the notebook of {other}, not of {assignment} (was the wrong file submitted?)"
    return (f"the notebook has none of {assignment}'s cells: it is another notebook, or its cells lost their "
            "grading metadata (copy your answers into a fresh copy of the exercise and submit that)")


def _repair(nb, release, assignment: str) -> list:
    """Bring `nb`'s graded and course cells back to the release's; return what was done."""
    wanted = {_grade_id(c): c for c in release.cells if _grade_id(c)}
    notes, seen, restored_course = [], set(), 0
    for index, cell in enumerate(nb.cells):
        grade_id = _grade_id(cell)
        if "nbgrader" in cell.get("metadata", {}) and (grade_id not in wanted or grade_id in seen):
            del cell.metadata["nbgrader"]
            what = "a copy of" if grade_id in seen else "grading metadata for a cell the exercise doesn't have,"
            notes.append(f"cell {index + 1} carried {what} `{grade_id}`; it was run as ordinary code")
            continue
        if not grade_id:
            continue
        seen.add(grade_id)
        want = wanted[grade_id]
        cell.metadata["nbgrader"] = copy.deepcopy(want.metadata["nbgrader"])
        for key in ("deletable", "editable"):
            cell.metadata.pop(key, None)
            if key in want.metadata:
                cell.metadata[key] = want.metadata[key]
        edited = (_without_hidden_tests(cell.source).rstrip() != want.source.rstrip() or cell.cell_type != want.cell_type)
        edited = edited and not (cell.cell_type == want.cell_type and _published(cell, grade_id, assignment))
        if want.metadata["nbgrader"].get("locked") and edited:
            if want.metadata["nbgrader"].get("grade"):
                notes.append(f"the test cell `{grade_id}` had been edited; it was restored")
            else:
                restored_course += 1
            nb.cells[index] = copy.deepcopy(want)
        elif cell.cell_type != want.cell_type:
            notes.append(f"the answer cell `{grade_id}` had been turned into a {cell.cell_type} cell; it was run as code")
            nb.cells[index] = nbformat.v4.new_code_cell(cell.source, metadata=cell.metadata)
    # Put deleted cells back, each after the cell that precedes it in the release.
    order = [_grade_id(c) for c in release.cells if _grade_id(c)]
    for position, grade_id in enumerate(order):
        if grade_id in seen:
            continue
        want = wanted[grade_id]
        if not want.metadata["nbgrader"].get("locked"):
            notes.append(f"the answer cell `{grade_id}` is missing (deleted?)")
            continue
        present = {_grade_id(c): i for i, c in enumerate(nb.cells) if _grade_id(c)}
        before = next((present[g] for g in reversed(order[:position]) if g in present), -1)
        nb.cells.insert(before + 1, copy.deepcopy(want))
        seen.add(grade_id)
        if want.metadata["nbgrader"].get("grade"):
            notes.append(f"the test cell `{grade_id}` had been deleted; it was put back")
        else:
            restored_course += 1
    if restored_course:
        notes.append(f"{restored_course} of the course's own cells (text or code you were not meant to change) "
                     "had been edited or deleted; they were restored")
    return notes


def check_submission(data: bytes, assignment: str) -> Intake:
    """Read, identify and repair a submission of `assignment` (the file's bytes)."""
    nb, problem = _parse(data)
    if nb is None:
        return Intake(rejected=problem)
    problem = _identity_problem(nb, assignment)
    if problem:
        return Intake(rejected=problem)
    release = nbformat.read(str(notebook_path(assignment, "release", ROOT)), as_version=4)
    notes = _repair(nb, release, assignment)
    for cell in nb.cells:
        cell.source = cell.source.encode("utf-8", "replace").decode("utf-8")  # a lone surrogate: JSON allows it
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nb.metadata["kernelspec"] = copy.deepcopy(release.metadata["kernelspec"])
    flags = [f"cell {i + 1} mentions `{m.group(1)}`" for i, c in enumerate(nb.cells)
             if c.cell_type == "code" and not c.metadata.get("nbgrader", {}).get("locked")
             for m in [REACHES_FOR_GRADING.search(c.source)] if m]
    return Intake(notebook=nb, notes=notes, flags=flags)
