import os
import sys
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Tests never touch the network, and keep notebook training loops to a few steps.
os.environ["COURSE_OFFLINE"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("COURSE_MAX_STEPS", "2")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # two test workers on two cores: one torch thread each

from tests import course  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def shared_folder(tmp_path_factory, worker_id):
    """A folder all test workers of this session see (xdist's documented way): the released course is built
    there once."""
    base = tmp_path_factory.getbasetemp()
    course.SHARED = base.parent if worker_id != "master" else base
    return course.SHARED


@pytest.fixture(scope="session")
def graded_course(tmp_path_factory):
    """A scratch course root with every assignment released: one per test worker."""
    return course.ScratchCourse(tmp_path_factory.mktemp("course"))
