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

from instructor import nbgrader_ops
from instructor.course.build import build, check
from instructor.course.notebooks import ASSIGNMENTS, ROOT, grade_cells, notebook_path, read_notebook


def grade(args) -> int:
    from instructor.grading import schedule, sandbox
    limits = sandbox.Limits(cell_timeout=args.cell_timeout, notebook_timeout=args.notebook_timeout,
                            memory_mb=args.memory_mb, engine=args.engine,
                            trailing_cells=args.run_trailing_cells)
    plan = schedule.Plan(workers=args.workers or schedule.default_workers(), gpu_workers=args.gpu_workers,
                           limits=limits, isolation=args.isolation, scheduler=args.scheduler)
    results = schedule.grade_class(args.assignments, students=args.student or None, plan=plan)
    if not results:
        print("Nothing was graded.", file=sys.stderr)
        return 1
    path = schedule.write_report(results, schedule.report_path())
    counts = {s: sum(r.status == s for r in results) for s in ("graded", "rejected", "failed")}
    print(f"{counts['graded']} graded, {counts['rejected']} rejected, {counts['failed']} failed; "
          f"{sum(bool(r.notes) for r in results)} with grading notes. Report: {path}")
    return 0


def feedback(args) -> int:
    from instructor.grading import feedback as fb
    fb.generate(args.assignments)
    print(f"Feedback: {ROOT / 'feedback'}/<student>/<assignment>/<assignment>.html")
    return 0


def export(args) -> int:
    from instructor.grading import export as ex
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
    parser.add_argument("--engine", choices=["cleanroom", "kernel"], default="cleanroom",
                        help="cleanroom: one run in a jailed fork-server child, each check judged in the worker "
                             "(default); kernel: nbgrader autograde in a Jupyter kernel, then the clean room's "
                             "verdict (slower)")
    parser.add_argument("--run-trailing-cells", action="store_true",
                        help="also run the cells after the last graded one (they cannot change a score; "
                             "the clean-room engine skips them unless asked)")
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="grade on a Dask cluster (tcp://host:8786) instead of this machine")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m instructor", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in ("build", "check", "all"):
        _with_assignments(commands.add_parser(name, help=__doc__.split(name, 1)[1].split("\n")[0].strip()))
    from instructor.course import publish
    from instructor.grading import collect
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
