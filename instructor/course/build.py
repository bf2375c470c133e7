"""Building the course: source/ -> release/ and solution/ through nbgrader, then the reference solutions
autograded (`python -m instructor all`, which `make course` runs) with a score table."""
import time

from instructor import nbgrader_ops
from instructor.course.notebooks import ASSIGNMENTS, REFERENCE_STUDENT, ROOT, cuda_test_cells, notebook_path


def build(assignments):
    t = time.perf_counter()
    if sorted(assignments) == sorted(ASSIGNMENTS):  # nbgrader takes a glob: two commands for the whole course,
        nbgrader_ops.generate_release("*")           # not two per exercise (most of each is importing nbgrader)
        nbgrader_ops.generate_solution("*")
        print(f"built   all {len(assignments)} exercises: release/ and solution/   ({time.perf_counter() - t:.1f} s)")
        return
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
