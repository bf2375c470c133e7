"""Visible self-checks: short, friendly messages instead of stack traces.

The graders (instructor side) raise the same `CheckFailed`, so students and the autograder
see failures in one format: what was expected and what came back."""
import math


class CheckFailed(AssertionError):
    def _render_traceback_(self):  # IPython shows this instead of a stack trace
        return [f"\u2717 {self}"]


def fmt(x) -> str:
    """84000000000.0 -> '84,000,000,000'; 0.0094488 -> '0.0094488'."""
    x = float(x)
    return f"{int(x):,}" if x.is_integer() and abs(x) < 1e18 else f"{x:,.6g}"


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def expect_close(actual, expected, what: str, rel: float = 1e-6, abs_: float = 0.0) -> None:
    """`actual` must be a number within `rel` (relative) or `abs_` of `expected`."""
    try:
        value = float(actual)
    except (TypeError, ValueError):
        raise CheckFailed(f"{what}: expected the number {expected!r}, got {actual!r} "
                          f"({type(actual).__name__}).") from None
    if not math.isclose(value, expected, rel_tol=rel, abs_tol=abs_):
        raise CheckFailed(f"{what}: expected {fmt(expected)}, got {fmt(value)}.")


def reveal(name: str, prediction, actual, unit: str = "") -> None:
    """Compare a student's prediction with the computed value (never graded)."""
    if prediction is None:
        print(f"{name}: {fmt(actual)}{unit}  (you made no prediction: next time, write one down first!)")
        return
    off = abs(actual - prediction) / abs(actual) if actual else abs(prediction)
    verdict = "spot on" if off < 0.05 else "close" if off < 0.25 else "a surprise: worth a second look"
    print(f"{name}: you predicted {fmt(prediction)}{unit}, it is {fmt(actual)}{unit}  ({verdict})")
