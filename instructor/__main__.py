"""Instructor commands, run from the course root (`make course` runs `all`; docs/grading.md: the class cycle).

    python -m instructor build    [ID ...]   source/ -> release/ (student) and solution/ versions
    python -m instructor check    [ID ...]   autograde the reference solutions, print a score table
    python -m instructor all      [ID ...]   both: the course's main job
    python -m instructor publish  DEST --repo OWNER/NAME [--branch B]
                                             the student repository: release notebooks, utils/, setup

  after release, for a class:
    python -m instructor collect  INPUT ...  Colab downloads or LMS zips -> submitted/<student>/<ID>/
    python -m instructor grade    [ID ...]   autograde every submission in parallel, each in a sandbox
    python -m instructor feedback [ID ...]   feedback/<student>/<ID>/<ID>.html, without hidden tests
    python -m instructor export              grades.csv: a row per student, a column per exercise
    python -m instructor class    [ID ...]   grade, feedback and export in one go
"""
import argparse
import sys
import time

from instructor import nbgrader_ops
from instructor.notebooks import (ASSIGNMENTS, REFERENCE_STUDENT, ROOT, cuda_test_cells, grade_cells, notebook_path,
                                  read_notebook)



def build(assignments):
    for a in assignments:
        t = time.perf_counter()
        nbgrader_ops.generate_release(a)
        nbgrader_ops.generate_solution(a)
        print(f"built   {a:26s} release/ and solution/   ({time.perf_counter() - t:.1f} s)")


def warn_about_cuda(assignments) -> dict:
    """Before grading: which grade cells cannot pass on this machine, said up front."""
    import torch
    if torch.cuda.is_available():
        return {}
    blocked = {a: cuda_test_cells(a) for a in assignments}
    blocked = {a: cells for a, cells in blocked.items() if cells}
    for a, cells in blocked.items():
        print(f"WARNING: no CUDA GPU here. {a} has {len(cells)} grade cell(s) that must be graded on a GPU "
              f"({', '.join(cells)}); here they will score 0 with that message.")
    return blocked


def check(assignments) -> bool:
    blocked = warn_about_cuda(assignments)
    rows, ok = [], True
    for a in assignments:
        t = time.perf_counter()
        nbgrader_ops.submit(a, REFERENCE_STUDENT, notebook_path(a, "solution"))
        nbgrader_ops.autograde(a, REFERENCE_STUDENT)
        scores = nbgrader_ops.cell_scores(a, REFERENCE_STUDENT)
        seconds = time.perf_counter() - t
        lost = [g for g, (s, m) in scores.items() if s < m]
        unexpected = [g for g in lost if g not in blocked.get(a, [])]
        ok &= not unexpected
        rows.append((a, sum(s for s, _ in scores.values()), sum(m for _, m in scores.values()),
                     seconds, unexpected, [g for g in lost if g in blocked.get(a, [])]))
    print(f"\n{'assignment':26s} {'score':>11s} {'time':>7s}  notes")
    for a, score, max_score, seconds, unexpected, needs_gpu in rows:
        notes = []
        if unexpected:
            notes.append("FAILED: " + ", ".join(unexpected))
        if needs_gpu:
            notes.append("needs a GPU: " + ", ".join(needs_gpu))
        print(f"{a:26s} {score:5g} / {max_score:<3g} {seconds:6.0f}s  {'; '.join(notes) or 'full marks'}")
    total, total_max = sum(r[1] for r in rows), sum(r[2] for r in rows)
    print(f"{'total':26s} {total:5g} / {total_max:<3g}")
    print(f"\nGraded notebooks: {ROOT / 'autograded' / REFERENCE_STUDENT}")
    return ok


def grade(args) -> int:
    from instructor import classgrade, sandbox
    limits = sandbox.Limits(cell_timeout=args.cell_timeout, notebook_timeout=args.notebook_timeout,
                            memory_mb=args.memory_mb)
    plan = classgrade.Plan(workers=args.workers or classgrade.default_workers(), gpu_workers=args.gpu_workers,
                           limits=limits, isolation=args.isolation, scheduler=args.scheduler)
    results = classgrade.grade_class(args.assignments, students=args.student or None, plan=plan)
    if not results:
        print("Nothing was graded.", file=sys.stderr)
        return 1
    path = classgrade.write_report(results, classgrade.report_path())
    counts = {s: sum(r.status == s for r in results) for s in ("graded", "rejected", "failed")}
    print(f"{counts['graded']} graded, {counts['rejected']} rejected, {counts['failed']} failed; "
          f"{sum(bool(r.notes) for r in results)} with grading notes. Report: {path}")
    return 0


def feedback(args) -> int:
    from instructor import feedback as fb
    fb.generate(args.assignments)
    print(f"Feedback: {ROOT / 'feedback'}/<student>/<assignment>/<assignment>.html")
    return 0


def export(args) -> int:
    from instructor import export as ex
    path = ex.export(args.to)
    maxima = ", ".join(f"{a} {sum(grade_cells(read_notebook(notebook_path(a))).values()):g}" for a in ASSIGNMENTS)
    print(f"Grades: {path} (one row per student; maximum points: {maxima})")
    return 0


def _with_assignments(parser):
    parser.add_argument("assignments", nargs="*", metavar="ID", help=f"default: all of {', '.join(ASSIGNMENTS)}")


def _grading_options(parser):
    parser.add_argument("--student", action="append", metavar="ID", help="grade only these students (repeatable)")
    parser.add_argument("--workers", type=int, help="CPU workers (default: one per core, one per 4 GB of memory)")
    parser.add_argument("--gpu-workers", type=int, help="GPU workers for Exercise 5 (default: one per GPU)")
    parser.add_argument("--cell-timeout", type=int, default=300, metavar="S", help="seconds a cell may run (300)")
    parser.add_argument("--notebook-timeout", type=int, default=1800, metavar="S",
                        help="seconds a whole notebook may run (1800)")
    parser.add_argument("--memory-mb", type=int, default=6144, help="memory a notebook may hold (6144 MB)")
    parser.add_argument("--isolation", choices=["auto", "namespaces", "process"], default="auto",
                        help="namespaces: read-only file system, no network, own processes (auto: when possible)")
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="grade on a Dask cluster (tcp://host:8786) instead of this machine")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m instructor", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in ("build", "check", "all"):
        _with_assignments(commands.add_parser(name, help=__doc__.split(name, 1)[1].split("\n")[0].strip()))
    from instructor import collect, publish
    publish.add_arguments(commands.add_parser("publish", help="write the student repository into DEST"))
    collect.add_arguments(commands.add_parser("collect", help="Colab downloads or LMS zips -> submitted/"))
    for name, what in (("grade", "autograde every submission"), ("class", "grade, feedback and export")):
        sub = commands.add_parser(name, help=what)
        _with_assignments(sub)
        _grading_options(sub)
    _with_assignments(commands.add_parser("feedback", help="feedback HTML without hidden tests"))
    commands.add_parser("export", help="grades.csv").add_argument("--to", default="grades.csv", metavar="PATH")
    args = parser.parse_args(argv)

    if hasattr(args, "assignments"):
        unknown = [a for a in args.assignments if a not in ASSIGNMENTS]
        if unknown:
            parser.error(f"unknown assignment(s) {', '.join(unknown)}; choose from {', '.join(ASSIGNMENTS)}")
        args.assignments = args.assignments or ASSIGNMENTS
        missing = [a for a in args.assignments if not notebook_path(a).exists()]
        if missing:
            parser.error(f"no source notebook for {', '.join(missing)} (expected {notebook_path(missing[0])})")
    try:
        if args.command in ("build", "all"):
            build(args.assignments)
        if args.command in ("check", "all"):
            return 0 if check(args.assignments) else 1
        if args.command == "collect":
            return collect.run(args)
        if args.command == "publish":
            return publish.run(args)
        if args.command in ("grade", "class") and grade(args) != 0:
            return 1
        if args.command in ("feedback", "class"):
            feedback(args)
        if args.command == "class":
            args.to = "grades.csv"
        if args.command in ("export", "class"):
            export(args)
    except nbgrader_ops.NbgraderFailed as error:
        print(error, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
