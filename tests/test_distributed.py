"""The class grader on a Dask cluster (here a local one with two worker processes): same grades as locally.

On real machines the workers are `dask worker` processes started from a checkout of this repository
(docs/grading.md); the jobs carry the notebooks, the results carry the graded notebooks back."""
import os

import pytest

from instructor.grading import schedule
from tests import fake_class
from tests.course import ScratchCourse

pytestmark = pytest.mark.slow
KINDS = ["correct", "partial", "blank", "os._exit kills the kernel"]


def test_a_dask_cluster_grades_like_this_machine(tmp_path, monkeypatch):
    distributed = pytest.importorskip("distributed")
    monkeypatch.setenv("PYTHONPATH", os.getcwd())  # worker processes import instructor/ from the checkout
    course = ScratchCourse(tmp_path)
    submissions = fake_class.submissions_for(course, "ex1_memory", KINDS, ["w", "x", "y", "z"])
    for sub in submissions:
        folder = tmp_path / "submitted" / sub.student / sub.assignment
        folder.mkdir(parents=True)
        (folder / f"{sub.assignment}.ipynb").write_bytes(sub.data)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster:
        results = schedule.grade_class(["ex1_memory"], tmp_path,
                                         plan=schedule.Plan(scheduler=cluster.scheduler_address))
    got = {r.student: (r.score, r.notes) for r in results}
    for sub in submissions:
        score, notes = got[sub.student]
        assert score == sub.expected_total
        assert sub.says is None or any(sub.says in n for n in notes)
