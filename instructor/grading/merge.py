"""Stage 5 of a submission's trip: the run's verdicts and outputs become the graded notebook and its scores.

A test cell scores its points when the judge (instructor/grading/judge.py) passed its check, and nothing
otherwise: the judge's word is the grade, whatever the notebook's process printed (a library's warning on
stderr costs nothing). The judge's message is the test cell's last output; what the grader did to the
notebook (a cell removed, an output cut short) goes into a notes cell at the top, which feedback shows.
"""
import copy

import nbformat

from instructor.course.notebooks import grade_cells, notebook_path, read_notebook
from instructor.grading import execute

def zero_scores(assignment: str) -> dict:
    return {g: [0.0, float(p)] for g, p in grade_cells(read_notebook(notebook_path(assignment))).items()}


def guard_notes(report: dict) -> list:
    notes = [f"{r['cell']} {r['reason']}; the notebook was graded without it" for r in report.get("removed", {}).values()]
    if report.get("timed_out"):
        cells = ", ".join(str(i + 1) for i in report["timed_out"])
        notes.append(f"cell(s) {cells} ran past the time limit and were stopped")
    if report.get("truncated"):
        notes.append(f"the output of cell(s) {', '.join(str(i + 1) for i in report['truncated'])} was cut short")
    if report.get("not_run"):
        notes.append(f"{len(report['not_run'])} cell(s) were not run: the notebook used up its grading time")
    return notes


def apply_verdicts(room: execute.Verdicts, out, scores: dict, notes: list, flags: list, report: dict) -> dict:
    """The grade: a test cell keeps the kernel run's points only if the clean room passed it too."""
    removed_in_kernel = set(report.get("removed", {}))
    for index, (cell, why) in room.removed.items():
        if str(index) not in removed_in_kernel:
            notes.append(f"{cell} {why}; the notebook was graded without it")
    final = {}
    for grade_id, (score, max_score) in scores.items():
        if room.passed.get(grade_id):
            final[grade_id] = [score, max_score]
            continue
        final[grade_id] = [0.0, max_score]
        if score:  # the kernel's run passed what the clean room failed: say so, in the cell and on top
            why = room.why.get(grade_id, "it failed")
            notes.append(f"`{grade_id}` passed in the notebook's own run but failed in the clean-room run that "
                         f"grades it: {why}")
            flags.append(f"the kernel's run and the clean room disagree on {grade_id}")
            for cell in out.cells:
                if cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") == grade_id:
                    cell.outputs.append(nbformat.v4.new_output("error", ename="CleanRoomVerdict", evalue=why,
                                                               traceback=[f"CleanRoomVerdict: {why}"]))
    flags += [f for f in room.flags if f not in flags]
    return final


def notes_cell(notes: list, flags: list = ()) -> dict:
    """The markdown cell put at the top of a graded notebook (and so of its feedback)."""
    lines = ["**Grading notes** (from the autograder)", ""] + [f"- {n[0].upper()}{n[1:]}." for n in notes]
    cell = nbformat.v4.new_markdown_cell("\n".join(lines))
    cell.metadata["course_grading_notes"] = {"notes": notes, "flags": list(flags)}
    return cell


NOT_RUN = "[not run by the autograder: no graded cell comes after it, so it cannot change your score]\n"


def verdict_output(passed: bool, message: str, judged: bool = True, after_error: bool = False):
    """The judge's word, as the test cell's last output."""
    if passed:
        return nbformat.v4.new_output("stream", name="stdout", text=f"\u2713 {message}\n")
    if after_error:  # the cell's own error is shown above: say what it cost
        return nbformat.v4.new_output("stream", name="stdout", text=f"[autograder: {message}]\n")
    return nbformat.v4.new_output("error", ename="CheckFailed", evalue=message, traceback=[f"\u2717 {message}"])


def graded_notebook(nb, room: execute.Verdicts):
    """The submission as graded: each cell with the outputs of the clean room's final run, numbered as
    Jupyter would; a removed cell says why; each test cell ends with the judge's verdict."""
    out = copy.deepcopy(nb)
    count = 0
    for index, cell in enumerate(out.cells):
        if cell.cell_type != "code":
            continue
        cell.outputs, cell.execution_count = [], None
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if index in room.removed:
            what, why = room.removed[index]
            cell.outputs = [nbformat.v4.new_output("error", ename="Autograder", evalue=f"this cell {why}",
                                                   traceback=[f"Autograder: {what} {why}; the notebook was "
                                                              "graded without it"])]
        elif index in room.outputs or grade_id in room.passed:
            cell.outputs = [nbformat.from_dict(output) for output in room.outputs.get(index, [])]
        elif index > room.last_run_cell:
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=NOT_RUN)]
            continue
        else:
            continue
        count += 1
        cell.execution_count = count
        if grade_id in room.passed:
            judged = room.judged.get(grade_id, False)
            if judged:  # what the notebook's process raised about it is replaced by the judge's own word
                cell.outputs = [o for o in cell.outputs if o.output_type != "error"]
            shown_error = any(o.output_type == "error" for o in cell.outputs)
            cell.outputs.append(verdict_output(room.passed[grade_id], room.messages.get(grade_id, ""), judged,
                                               after_error=shown_error))
    return out


def cell_scores(out, room: execute.Verdicts) -> dict:
    """grade_id -> [score, max]: the cell's points where the judge passed its check, else 0."""
    from nbgrader.utils import is_grade
    scores = {}
    for cell in out.cells:
        if not is_grade(cell):
            continue
        grade_id = cell.metadata.nbgrader["grade_id"]
        max_score = float(cell.metadata.nbgrader.get("points", 0))
        scores[grade_id] = [max_score if room.passed.get(grade_id) else 0.0, max_score]
    return scores
