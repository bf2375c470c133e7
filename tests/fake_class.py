"""A generated class: correct, partial, blank and broken submissions, each with the grade it must get.

Expected grades are derived, never typed in: a submission starts from the solution (every test cell
full marks) or the blank release (every test cell zero); a wrong answer from tests/answers zeroes
exactly that answer's test cells (tests/test_answers.py proves that is what the judges do); a broken
extra cell costs nothing, because the autograder removes it and grades what is left.

Used by tests/test_class_grading.py and benchmarks/grading_throughput.py.
"""
import copy
import dataclasses
import json

from instructor.course.notebooks import grade_cells, read_notebook, notebook_path
from tests.course import answers_module, cells_grading, with_cell

# Extra cells a student might add, and what the autograder must say about each (one of the phrases: the
# clean room and the kernel engine word some of them differently).
BROKEN_CELLS = {
    "infinite loop": ("while True:\n    pass", "ran past the"),
    "loop that swallows the interrupt": (
        "import time\nwhile True:\n    try:\n        time.sleep(0.01)\n    except KeyboardInterrupt:\n        pass",
        ("ran past the", "did not stop when interrupted")),
    "exhausts memory": ("hog = []\nwhile True:\n    hog.append(bytearray(50_000_000))", "MB of memory"),
    "os._exit kills the kernel": ("import os\nos._exit(1)", "stopped the Python"),
    "exit() shuts the kernel down": ("exit()", None),  # an error in that cell (the kernel engine: a note)
    "sys.exit": ("import sys\nsys.exit('done for today')", None),  # IPython turns it into an error in that cell
    "kills the grading process": ("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)", None),
    "fork bomb": ("import os, time\nfor _ in range(200):\n    if os.fork() == 0:\n        time.sleep(120)\n"
                  "        os._exit(0)", "processes"),
    "huge output": ("for i in range(400_000):\n    print('all work and no play makes jack a dull boy', i)",
                    "was cut short"),
    "writes outside its sandbox": (
        "import os\nfor path in ['/tmp/poisoned-by-a-student', os.environ['COURSE_ROOT'] + '/graders/poisoned.py']:\n"
        "    try:\n        open(path, 'w').write('print(\"poisoned\")')\n    except OSError as error:\n"
        "        print('refused:', error)", None),
}
# Tampering that fakes a wrong answer's points where the check judges inside the notebook's process (stock
# nbgrader: tests/test_class_grading.py proves it pays there) and earns nothing where the judge is elsewhere:
# a check silenced, the judge's fail() disarmed where the judge can be imported, the self-checks disarmed.
TAMPERING = {
    "ex1_memory": ("to_gb", "import graders.ex1_memory\ngraders.ex1_memory.check_to_gb = lambda ns: None\n"
                            "expect_close = lambda *args, **kwargs: None", None),
    "ex2_quantization": ("absmax_quantize", "try:\n    import judges.ex2_quantization as _g\n"
                                            "except ImportError:\n    import graders.ex2_quantization as _g\n"
                                            "_g.fail = lambda message: None\n"
                                            "expect = expect_close = lambda *a, **k: None", None),
}


@dataclasses.dataclass
class Submission:
    student: str
    assignment: str
    kind: str
    data: bytes
    expected: dict  # grade_id -> points it must get
    status: str = "graded"
    says: object = None  # a phrase the notes must contain (or a tuple: one of them)

    @property
    def expected_total(self) -> float:
        return sum(self.expected.values())


def _points(assignment) -> dict:
    return {g: float(p) for g, p in grade_cells(read_notebook(notebook_path(assignment))).items()}


def _add_cell(nb: dict, source: str, after: str = "code_1") -> dict:
    """A copy of `nb` with a student's code cell after the cell `after` (the exercise's imports)."""
    nb = copy.deepcopy(nb)
    at = next(i for i, c in enumerate(nb["cells"]) if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") == after)
    nb["cells"].insert(at + 1, {"cell_type": "code", "id": f"student-{at}", "metadata": {}, "source": source,
                                "outputs": [], "execution_count": None})
    return nb


def _wrong(assignment: str, answer: str, index: int = 0) -> str:
    return answers_module(assignment).WRONG[answer][index][1]


def submissions_for(course, assignment: str, kinds: list, names: list, broken_allowed=BROKEN_CELLS) -> list:
    """One Submission per kind, in order, for students `names`."""
    solution, release = course.notebook(assignment, "solution"), course.notebook(assignment, "release")
    full, answers = _points(assignment), answers_module(assignment)
    zero = {g: 0.0 for g in full}

    def losing(nb, *lost):
        expected = dict(full)
        for answer in lost:
            expected.update({g: 0.0 for g in cells_grading(nb, answer)})
        return expected

    out = []
    for student, kind in zip(names, kinds):
        raw = None
        if kind == "correct":
            nb, expected, says = solution, full, None
        elif kind == "correct, written differently":
            answer, source = next(iter(answers.ALTERNATIVE.items()))
            nb, expected, says = with_cell(solution, answer, source), full, None
        elif kind == "blank":
            nb, expected, says = release, zero, None
        elif kind.startswith("partial"):
            lost = list(answers.WRONG)[: 1 if kind == "partial" else 2]
            nb = solution
            for answer in lost:
                nb = with_cell(nb, answer, _wrong(assignment, answer))
            expected, says = losing(nb, *lost), None
        elif kind == "invalid JSON":
            nb, raw, expected, says = None, json.dumps(solution).encode()[:-200], zero, "JSON is broken"
        elif kind == "another exercise's notebook":
            other = "ex2_quantization" if assignment != "ex2_quantization" else "ex1_memory"
            nb, raw, expected, says = None, json.dumps(course.notebook(other, "solution")).encode(), zero, other
        elif kind == "deleted test cell":
            test = next(iter(full))
            nb = copy.deepcopy(solution)
            nb["cells"] = [c for c in nb["cells"] if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") != test]
            expected, says = full, "had been deleted; it was put back"
        elif kind == "edited test cell hides a wrong answer":
            answer = list(answers.WRONG)[1]
            nb = with_cell(solution, answer, _wrong(assignment, answer))
            for test in cells_grading(nb, answer):
                nb = with_cell(nb, test, "print('all tests pass!')")
            expected, says = losing(nb, answer), "had been edited; it was restored"
        elif kind == "bonus cell worth 100 points":
            nb = _add_cell(solution, "print('free points')")
            cell = next(c for c in nb["cells"] if c.get("id", "").startswith("student-"))
            cell["metadata"]["nbgrader"] = {"grade": True, "solution": False, "locked": True, "points": 100,
                                            "grade_id": "bonus", "schema_version": 3}
            expected, says = full, "grading metadata for a cell the exercise doesn't have"
        elif kind == "tampering hides a wrong answer":
            answer, source, says = TAMPERING[assignment]
            nb = _add_cell(with_cell(solution, answer, _wrong(assignment, answer)), source)
            expected = losing(nb, answer)
        elif kind in broken_allowed:
            source, says = broken_allowed[kind]
            nb, expected = _add_cell(solution, source), full
        else:
            raise ValueError(f"unknown kind of submission: {kind}")
        status = "rejected" if raw is not None else "graded"
        out.append(Submission(student, assignment, kind, raw if raw is not None else json.dumps(nb).encode(),
                              expected, status, says))
    return out


STUDENTS = ["ada", "alan", "barbara", "claude", "donald", "edsger", "frances", "grace", "john", "ken", "leslie",
            "margaret"]
# 30 submissions: 12 of Exercise 1, 12 of Exercise 2, 6 of Exercise 4. The bad kinds go mostly to the cheap
# exercises (a second of cells each); Exercise 4 brings PEFT, and its graded cells run in seconds (Exercise 3's
# train GPT-2 for longer whatever breaks in them).
CLASS = {
    "ex1_memory": ["correct", "correct, written differently", "blank", "partial", "partial, two answers",
                   "invalid JSON", "another exercise's notebook", "deleted test cell",
                   "edited test cell hides a wrong answer", "bonus cell worth 100 points",
                   "tampering hides a wrong answer", "exit() shuts the kernel down"],
    "ex2_quantization": ["correct", "blank", "partial", "partial, two answers", "tampering hides a wrong answer",
                         "infinite loop", "loop that swallows the interrupt", "exhausts memory",
                         "os._exit kills the kernel", "huge output", "kills the grading process", "fork bomb"],
    "ex4_peft_finetuning": ["correct", "correct, written differently", "blank", "partial", "sys.exit",
                            "writes outside its sandbox"],
}


def make_class(course, with_namespaces=True) -> list:
    """The 30 submissions of CLASS. Without namespaces, the submission that writes outside its sandbox is
    replaced by a correct one (only namespace isolation can stop it)."""
    out = []
    for assignment, kinds in CLASS.items():
        if not with_namespaces:
            kinds = ["correct" if k == "writes outside its sandbox" else k for k in kinds]
        out += submissions_for(course, assignment, kinds, STUDENTS)
    return out


def write_downloads(submissions, folder) -> None:
    """Save the class the way an instructor gets it from Colab: a folder per student, Colab's file names."""
    for i, sub in enumerate(submissions):
        name = f"{sub.assignment}.ipynb" if i % 3 else f"Copy of {sub.assignment}.ipynb"
        path = folder / sub.student / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(sub.data)
