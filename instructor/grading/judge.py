"""The judge: where a test cell's verdict is decided, in the grading worker, never in the notebook's process.

While a notebook runs in the clean room, each hidden check's collector asks on the channel for its inputs
and sends back what the student's code made of them (graders/_collect.py). A `Session` answers: it draws
the inputs with a fresh seed (judges/<exercise>.py `ask_<name>`), keeps what only the judge should know,
and judges the data that comes back (`judge_<name>`), which is all a notebook can offer for its points.

Nothing from the notebook's process is trusted: a message is parsed JSON of a known shape or it is
garbage; each check is asked once, in the notebook's order (asking for a later check closes the earlier
ones, so one check's inputs never help another's answer), and answered once. The verdicts are kept here;
what the notebook prints about them is only its own output.
"""
import dataclasses
import importlib
import re

from judges import _core

CHECK_CALL = re.compile(r"\bcheck_(\w+)\s*\(")
HIDDEN = re.compile(r"### BEGIN HIDDEN TESTS(.*?)### END HIDDEN TESTS", re.S)
NEVER_REPORTED = "the hidden check never reported to the grader"


def checks_of(test_source: str) -> list:
    """The checks a course test cell calls in its hidden part (`grader.check_<name>(...)`), in order."""
    hidden = HIDDEN.search(test_source)
    return list(dict.fromkeys(CHECK_CALL.findall(hidden.group(1) if hidden else test_source)))


@dataclasses.dataclass
class Outcome:
    passed: bool
    message: str
    judged: bool = True  # False: the check never reached the judge (the reason is in message)


class Session:
    """One run of one notebook: the checks of its test cells, in order, and their verdicts. A test cell that
    calls several checks passes when each of them does."""

    def __init__(self, assignment: str, tests: dict, context, module=None):
        """`tests`: grade_id -> course test cell source, in notebook order. `context()` -> a fresh Context."""
        self.module = module or importlib.import_module(f"judges.{assignment}")
        self.context = context
        self.grade_of = {}  # check name -> grade_id
        for grade_id, source in tests.items():
            for name in checks_of(source):
                if hasattr(self.module, f"ask_{name}"):
                    self.grade_of[name] = grade_id
        self.order = list(self.grade_of)
        self.state = {name: "waiting" for name in self.order}  # waiting -> asked -> judged, or closed
        self.secrets, self.problems = {}, []
        self.outcomes = {}  # check name -> Outcome

    def handle(self, message: dict) -> dict:
        """The reply to one `ask` or `answer` of the notebook's process."""
        name = message.get("check")
        if type(name) is not str or name not in self.state:
            return {"message": f"there is no check {str(name)[:60]!r} to grade here"}
        if message["event"] == "ask":
            return self._ask(name)
        return self._answer(name, message.get("data"))

    def _ask(self, name: str) -> dict:
        if self.state[name] != "waiting":
            return {"message": f"the check {name} was already run once in this grading"}
        for earlier in self.order[:self.order.index(name)]:
            self._close(earlier, "the notebook asked for a later check first")
        try:
            request, secret = _core.ask(self.module, name, self.context())
        except _core.Failed as failure:
            self._decide(name, _core.Verdict(False, str(failure)))
            return {"verdict": {"passed": False, "message": str(failure)}}
        except Exception as error:  # noqa: BLE001 - the judge's own bug: nothing the notebook did
            verdict = _core.Verdict(False, f"the grader could not prepare {name} (the instructor has been told)",
                                    f"the judge of {name} broke while drawing its inputs: {type(error).__name__}: {error}")
            self._decide(name, verdict)
            return {"verdict": {"passed": False, "message": verdict.message}}
        self.state[name], self.secrets[name] = "asked", secret
        return {"request": request}

    def _answer(self, name: str, data) -> dict:
        if self.state[name] != "asked":
            return {"verdict": {"passed": False, "message": f"{name} was not waiting for an answer"}}
        verdict = _core.judge(self.module, name, data, self.secrets.pop(name))
        self._decide(name, verdict)
        return {"verdict": {"passed": verdict.passed, "message": verdict.message}}

    def garbage(self, what: str) -> None:
        """The notebook's process sent what the judge cannot read: a check waiting for its answer fails."""
        for name in self.order:
            if self.state[name] == "asked":
                self._close(name, f"the notebook's process sent {what} instead of this check's data")

    def _decide(self, name: str, verdict) -> None:
        self.state[name] = "judged"
        self.outcomes[name] = Outcome(verdict.passed, verdict.message)
        if verdict.problem:
            self.problems.append(verdict.problem)

    def _close(self, name: str, why: str) -> None:
        if self.state[name] in ("waiting", "asked"):
            self.state[name] = "closed"
            self.secrets.pop(name, None)
            self.outcomes[name] = Outcome(False, why, judged=False)

    def finish(self, why: str = NEVER_REPORTED) -> dict:
        """grade_id -> Outcome of its test cell; a check that never reached the judge fails with `why`."""
        for name in self.order:
            self._close(name, why)
        cells = {}
        for name in self.order:
            cells.setdefault(self.grade_of[name], []).append(self.outcomes[name])
        said = lambda got: " ".join(dict.fromkeys(o.message for o in got))  # noqa: E731 - once each
        return {grade_id: Outcome(all(o.passed for o in got), said([o for o in got if not o.passed] or got),
                                  all(o.judged for o in got))
                for grade_id, got in cells.items()}
