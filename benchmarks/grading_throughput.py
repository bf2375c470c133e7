"""Grading throughput: stock sequential `nbgrader autograde` against `python -m instructor grade`.

    python benchmarks/grading_throughput.py                       # 24 submissions of Exercise 1, 1 and 2 workers
    python benchmarks/grading_throughput.py --assignment ex5_quantized_inference --count 8 --workers 4 \
        --gpu-workers 1,2                                        # on a GPU machine

It builds a scratch course with `--count` generated submissions (correct, partial and blank, from
tests/fake_class.py), then grades them: once with nbgrader's own Execute step (sequential, one process,
the way `nbgrader autograde ID` grades a class), once the same with this course's hardened Execute step,
and with `instructor grade` at each worker count and engine (the clean room alone by default, its checks
judged in the worker; every defence on). The fork servers start inside the timed run: a class pays for them once per worker. It prints submissions per minute and the ratio to
stock nbgrader, checks every run gave the same scores, and (--json) saves the figures.
This is a measurement, not a test: nothing here fails on a slow machine.
"""
import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
os.environ.setdefault("COURSE_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

from instructor import nbgrader_ops  # noqa: E402
from instructor.grading import execute, sandbox, schedule  # noqa: E402
from instructor.course.notebooks import cuda_test_cells  # noqa: E402
from tests import fake_class  # noqa: E402
from tests.course import ScratchCourse  # noqa: E402

KINDS = ["correct", "partial", "blank", "partial, two answers"]
STOCK_EXECUTE = """
# benchmark only: nbgrader's own Execute step instead of the course's GuardedExecute
from nbgrader.preprocessors import Execute
c.Autograde.autograde_preprocessors = [Execute if p is GuardedExecute else p
                                       for p in c.Autograde.autograde_preprocessors]
"""


def scores_of(root, assignment, students) -> dict:
    return {s: sum(v for v, _ in nbgrader_ops.cell_scores(assignment, s, root).values()) for s in students}


def sequential(root, assignment, stock: bool) -> float:
    config = root / "nbgrader_config.py"
    original = config.read_text()
    if stock:
        config.write_text(original + STOCK_EXECUTE)
    try:
        started = time.perf_counter()
        nbgrader_ops._run(["autograde", assignment, "--force"], root)
        return time.perf_counter() - started
    finally:
        config.write_text(original)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--assignment", default="ex1_memory")
    parser.add_argument("--count", type=int, default=24)
    parser.add_argument("--workers", default="1,2", help="CPU worker counts to try, comma-separated")
    parser.add_argument("--gpu-workers", default="", help="GPU worker counts to try (Exercise 5), comma-separated")
    parser.add_argument("--kinds", default=";".join(KINDS),
                        help="kinds of submission to cycle through (tests/fake_class.py), separated by ;")
    parser.add_argument("--skip-stock", action="store_true", help="skip the two sequential nbgrader runs")
    parser.add_argument("--engine", default="cleanroom",
                        help="engines of `instructor grade` to time, comma-separated: cleanroom (the clean room "
                             "as the only run, the default), kernel (a Jupyter kernel, then the clean room's "
                             "verdict), kernel-only (a Jupyter kernel and nothing else)")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)

    root = pathlib.Path(tempfile.mkdtemp(prefix="throughput-"))
    course = ScratchCourse(root)
    names = [f"student{i:03d}" for i in range(args.count)]
    pool = args.kinds.split(";")
    kinds = [pool[i % len(pool)] for i in range(args.count)]
    expected = {}
    # Without a GPU the CUDA-only cells score 0 ("must be graded on a GPU"): expected, not a difference.
    gpus = schedule.gpu_count()
    no_gpu = set() if gpus else set(cuda_test_cells(args.assignment))
    for sub in fake_class.submissions_for(course, args.assignment, kinds, names):
        folder = root / "submitted" / sub.student / args.assignment
        folder.mkdir(parents=True)
        (folder / f"{args.assignment}.ipynb").write_bytes(sub.data)
        expected[sub.student] = sum(v for g, v in sub.expected.items() if g not in no_gpu)
    print(f"{args.count} submissions of {args.assignment} in {root}; machine: {os.cpu_count()} cores, "
          f"{platform.processor() or platform.machine()}, GPUs: {gpus}")
    subprocess.run([sys.executable, "-c", "from utils.models import gpt2_source; gpt2_source()"], check=True,
                   cwd=root, capture_output=True)  # the stand-in model is built before any timing

    # Warm-up, untimed: the first notebook a fresh machine runs pays for reading torch and Jupyter from
    # disk; without this the first timed row (stock nbgrader) would carry that cost alone.
    nbgrader_ops._run(["autograde", args.assignment, "--student", names[0], "--force"], root)

    runs = []

    def note(label, seconds, workers=None, gpu_workers=None, results=()):
        got = scores_of(root, args.assignment, names)
        for r in results:  # say why a score is not the one expected, so a machine's difference can be read
            if got.get(r.student) != expected.get(r.student):
                print(f"  {r.student} ({kinds[names.index(r.student)]}): expected {expected[r.student]:g}, got "
                      f"{got.get(r.student)}; {r.status}; {r.scores}; notes: {r.notes}; flags: {r.flags}")
        per_minute = args.count / seconds * 60
        runs.append(dict(label=label, seconds=round(seconds, 1), per_minute=round(per_minute, 2), workers=workers,
                         worker_seconds_per_submission=round(seconds * (gpu_workers or workers or 1) / args.count, 2),
                         gpu_workers=gpu_workers, scores_as_expected=got == expected))
        print(f"{label:44s} {seconds:7.1f} s  {per_minute:6.2f} / min  scores {'ok' if got == expected else 'DIFFER'}")

    if not args.skip_stock:
        note("nbgrader autograde, stock Execute", sequential(root, args.assignment, stock=True))
        note("nbgrader autograde, course GuardedExecute", sequential(root, args.assignment, stock=False))
    engines = {"cleanroom": dict(engine="cleanroom"), "kernel": dict(engine="kernel"),
               "kernel-only": dict(engine="kernel", cleanroom=False)}
    for gpu_workers in [int(g) for g in args.gpu_workers.split(",") if g] or [None]:
        for workers in [int(w) for w in args.workers.split(",")]:
            for engine in args.engine.split(","):
                plan = schedule.Plan(workers=workers, gpu_workers=gpu_workers,
                                       limits=sandbox.Limits(**engines[engine]))
                execute.POOL.close()  # every run starts its own fork servers, as a class's grading does
                started = time.perf_counter()
                results = schedule.grade_class([args.assignment], root, plan=plan, echo=lambda *a: None)
                label = (f"instructor grade --engine {engine}, {workers} CPU worker(s)"
                         + (f", {gpu_workers} GPU" if gpu_workers else ""))
                note(label, time.perf_counter() - started, workers, gpu_workers, results)
                runs[-1]["engine"] = engine
                rooms_seen = [r.cleanroom for r in results if r.cleanroom is not None]
                if rooms_seen:  # what the child could arm on this machine ("" = everything)
                    runs[-1]["armed"] = sorted({f"{k}: {v or 'on'}" for r in rooms_seen for k, v in r.armed.items()})
                    runs[-1]["cleanroom_seconds_mean"] = round(sum(r.seconds for r in rooms_seen) / len(rooms_seen), 2)

    base = runs[0]["per_minute"]
    for run in runs:
        run["vs_first"] = round(run["per_minute"] / base, 2)
    print("\n| run | seconds | submissions / min | worker-seconds / submission | vs first row |\n"
          "| --- | --- | --- | --- | --- |")
    for run in runs:
        print(f"| {run['label']} | {run['seconds']} | {run['per_minute']} | {run['worker_seconds_per_submission']} "
              f"| {run['vs_first']}x |")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(dict(
            assignment=args.assignment, count=args.count, cores=os.cpu_count(), gpus=gpus,
            isolation="namespaces" if sandbox.namespaces_available() else "process", runs=runs), indent=1))


if __name__ == "__main__":
    main()
