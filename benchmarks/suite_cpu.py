"""Where a command's CPU time goes, by kind of process: the test suite's cost broken down.

    python benchmarks/suite_cpu.py                                  # `make test`'s pytest command
    python benchmarks/suite_cpu.py -- .venv/bin/python -m pytest tests/test_answers.py -n 2

Runs the command and, every half second, reads every process's cumulative CPU time (psutil). At the end it
prints the wall time, the CPU seconds of each kind of process (Jupyter kernels, fork servers and their
grading children, nbgrader commands, the test workers...), and how busy the machine's cores were, minute by
minute. A process that lives less than half a second is missed, and one that ends loses its last half second:
the figures are a floor. This is a measurement, not a test.
"""
import argparse
import collections
import os
import subprocess
import sys
import time

import psutil

PYTEST = [sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-q", "-rs"]
SERVER = "fork servers (their imports; their children are below)"
GRADING = "clean-room gradings (fork-server children: the notebooks' cells)"
KINDS = [  # (label, a piece of the command line), first match wins
    ("Jupyter kernels (stock nbgrader, the kernel engine, the student path)", "ipykernel"),
    (SERVER, "cleanroom import serve"),
    ("nbgrader commands", "nbgrader"),
    ("instructor commands", "-m instructor"),
    ("pip and uv (the student path's venv)", " pip "),
    ("pip and uv (the student path's venv)", "/uv"),
    ("test workers (pytest-xdist) and pytest", "exec(eval(sys.stdin.readline()))"),
    ("test workers (pytest-xdist) and pytest", "pytest"),
    ("Dask workers", "multiprocessing"),
]


def kind(cmdline: list, parent_cmdline: list = ()) -> str:
    text = " ".join(cmdline)
    label = next((label for label, piece in KINDS if piece in text), "other: " + " ".join(cmdline[:2])[-50:])
    # a forked child keeps its server's command line (the server's own parent, `unshare`, has another one)
    return GRADING if label == SERVER and list(parent_cmdline) == list(cmdline) else label


def sample(seen: dict, busy: collections.Counter, start: float, me: int, before: set) -> None:
    minute = int((time.monotonic() - start) // 60)
    for proc in psutil.process_iter(["pid", "ppid", "cmdline", "cpu_times"]):
        info = proc.info
        if info["pid"] == me or not info["cpu_times"]:
            continue
        cpu = info["cpu_times"].user + info["cpu_times"].system
        # a new process's time so far counts too; an old one's only from now
        entry = seen.setdefault(info["pid"], {"first": cpu, "cpu": cpu if info["pid"] in before else 0.0,
                                              "kind": kind([])})
        busy[minute] += max(0.0, cpu - entry["cpu"])
        entry["cpu"] = cpu
        if info["cmdline"]:  # the latest: a process that execs (the jail becomes a fork server) is what it became
            entry["cmdline"] = info["cmdline"]
            entry["kind"] = kind(info["cmdline"], seen.get(info["ppid"], {}).get("cmdline", ()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", nargs="*", help="the command to measure (default: the test suite)")
    args = parser.parse_args()
    command = args.command or PYTEST
    before = set(psutil.pids())  # what ran before the command: only its CPU time since then counts
    seen, busy = {}, collections.Counter()
    start = time.monotonic()
    child = subprocess.Popen(command)
    while child.poll() is None:
        sample(seen, busy, start, os.getpid(), before)
        time.sleep(0.5)
    wall = time.monotonic() - start
    by_kind, count = collections.Counter(), collections.Counter()
    for pid, entry in seen.items():
        spent = entry["cpu"] - (entry["first"] if pid in before else 0.0)
        by_kind[entry["kind"]] += spent
        count[entry["kind"]] += 1
    total = sum(by_kind.values())
    cores = psutil.cpu_count() or 1
    print(f"\n{' '.join(command)}\nexit {child.returncode}, {wall:.0f} s wall, {total:.0f} CPU s measured "
          f"({100 * total / (wall * cores):.0f}% of {cores} cores)")
    for label, spent in by_kind.most_common():
        if spent >= 1:
            print(f"  {spent:7.0f} s  {count[label]:5d} processes  {label}")
    span = {m: min(60.0, wall - 60 * m) for m in busy}  # the last minute is only as long as what was left of it
    print("busy cores, minute by minute:", " ".join(f"{100 * busy[m] / (span[m] * cores):.0f}%" for m in sorted(busy)))
    return child.returncode


if __name__ == "__main__":
    sys.exit(main())
