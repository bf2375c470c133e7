"""instructor/grading/collect.py: downloads from Colab/Drive and LMS zips land in submitted/<student>/<exercise>/.

Each input set is collected once (a module-scoped fixture: one `nbgrader zip_collect` run per exercise,
about 2 s each); the tests then check where every file went and what the report says about it.
"""
import argparse
import copy
import json
import os
import pathlib
import shutil
import time
import zipfile

import pytest

from instructor.grading import collect as collecting
from instructor.course.notebooks import ROOT, notebook_path

pytestmark = pytest.mark.xdist_group("collect")  # its module fixtures run nbgrader: once, on one worker
EX1, EX2 = "ex1_memory", "ex2_quantization"
DAY = 24 * 3600


def scratch_course(root: pathlib.Path) -> pathlib.Path:
    """A course root zip_collect can run in: release/ and the config copied, the code linked."""
    shutil.copytree(ROOT / "release", root / "release")
    shutil.copy(ROOT / "nbgrader_config.py", root / "nbgrader_config.py")
    for name in ("instructor", "graders", "utils"):
        os.symlink(ROOT / name, root / name)
    return root


def notebook_text(assignment, step="solution", marker=None) -> str:
    """A committed notebook; `marker` makes it tell apart from other copies of the same exercise."""
    nb = json.loads(notebook_path(assignment, step).read_text())
    if marker:
        nb = copy.deepcopy(nb)
        nb["metadata"]["marker"] = marker
    return json.dumps(nb)


NOT_A_COURSE_NOTEBOOK = json.dumps({"cells": [{"cell_type": "code", "source": "print(1)", "metadata": {},
                                               "outputs": [], "execution_count": None}],
                                    "metadata": {}, "nbformat": 4, "nbformat_minor": 5})
BROKEN_JSON = '{"cells": [{"cell_type": "code", "source": "x = 1",'


def write(path: pathlib.Path, text: str, age_days: float = 0) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    stamp = time.time() - age_days * DAY
    os.utime(path, (stamp, stamp))
    return path


def write_zip(path: pathlib.Path, members: dict) -> pathlib.Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def by_path(records) -> dict:
    return {r["path"]: r for r in records}


def submitted_files(root: pathlib.Path) -> dict:
    """relative path -> text of everything collect put under submitted/."""
    base = root / "submitted"
    return {p.relative_to(base).as_posix(): p.read_text() for p in sorted(base.rglob("*")) if p.is_file()}


def summary(records) -> dict:
    return {r["path"]: (r["status"], r["student"], r["assignment"]) for r in records}


# ------------------------------------------------------------------------------------ Colab / Drive

@pytest.fixture(scope="module")
def colab(tmp_path_factory):
    """A Drive folder of Colab downloads plus one loose notebook, collected for Exercises 1 and 2."""
    root = scratch_course(tmp_path_factory.mktemp("colab_course"))
    inputs = tmp_path_factory.mktemp("colab_inputs")
    d = inputs / "downloads"
    write(d / "alice" / "ex1_memory.ipynb", notebook_text(EX1, marker="alice"))
    write(d / "alice" / "ex2_quantization.ipynb", notebook_text(EX2, "release", marker="alice"))
    write(d / "alice" / ".ipynb_checkpoints" / "ex1_memory-checkpoint.ipynb", notebook_text(EX1, "release"))
    write(d / "bob_ex2_quantization.ipynb", notebook_text(EX2, marker="bob"))
    write(d / "ex1_memory-carol.ipynb", notebook_text(EX1, "release", marker="carol"))
    write(d / "dave" / "Copy of ex1_memory.ipynb", notebook_text(EX1, marker="dave old"))
    write(d / "dave" / "Copy of ex1_memory (1).ipynb", notebook_text(EX1, marker="dave new"), age_days=3)
    write(d / "erin" / "ex1_memory.ipynb", notebook_text(EX1, marker="erin old"), age_days=2)
    write(d / "erin" / "Copy of ex1_memory.ipynb", notebook_text(EX1, marker="erin new"), age_days=1)
    write(d / "frank_ex1_memory.ipynb", notebook_text(EX2, marker="frank"))  # named ex1, holds ex2
    write(d / "grace_ex1_memory.ipynb", BROKEN_JSON)
    write(d / "heidi" / "Untitled0.ipynb", notebook_text(EX2, marker="heidi"))  # only the cells say ex2
    write(d / "ivan" / "scratch.ipynb", NOT_A_COURSE_NOTEBOOK)
    write(d / "nina" / "ex1_memory_final.ipynb", notebook_text(EX1, marker="nina"))  # the folder says who
    write(d / "Jane Doe_ex1_memory.ipynb", notebook_text(EX1))
    write(d / "ex1_memory.ipynb", notebook_text(EX1))
    write(d / "notes.txt", "remember to grade ex3")
    write(d / ".DS_Store", "\0\0\0\1Bud1")
    loose = write(inputs / "mail" / "kim_ex2_quantization (1).ipynb", notebook_text(EX2, marker="kim"))
    drive = write_zip(inputs / "drive-download.zip", {  # Drive's zip of a shared folder of flat names
        "Submissions/luke_ex1_memory.ipynb": notebook_text(EX1, marker="luke"),
        "Submissions/mia_ex1_memory.ipynb": notebook_text(EX1, marker="mia")})
    records = collecting.collect([d, loose, drive], root, assignments=[EX1, EX2])
    return root, records


def test_colab_every_file_gets_one_record_with_its_status(colab):
    _, records = colab
    assert summary(records) == {
        "downloads/.DS_Store": ("ignored", None, None),
        "downloads/Jane Doe_ex1_memory.ipynb": ("unplaced", None, EX1),
        "downloads/alice/.ipynb_checkpoints/ex1_memory-checkpoint.ipynb": ("ignored", None, None),
        "downloads/alice/ex1_memory.ipynb": ("placed", "alice", EX1),
        "downloads/alice/ex2_quantization.ipynb": ("placed", "alice", EX2),
        "downloads/bob_ex2_quantization.ipynb": ("placed", "bob", EX2),
        "downloads/dave/Copy of ex1_memory (1).ipynb": ("placed", "dave", EX1),
        "downloads/dave/Copy of ex1_memory.ipynb": ("superseded", "dave", EX1),
        "downloads/erin/Copy of ex1_memory.ipynb": ("placed", "erin", EX1),
        "downloads/erin/ex1_memory.ipynb": ("superseded", "erin", EX1),
        "downloads/ex1_memory-carol.ipynb": ("placed", "carol", EX1),
        "downloads/ex1_memory.ipynb": ("unplaced", None, EX1),
        "downloads/frank_ex1_memory.ipynb": ("placed", "frank", EX1),
        "downloads/grace_ex1_memory.ipynb": ("placed", "grace", EX1),
        "downloads/heidi/Untitled0.ipynb": ("placed", "heidi", EX2),
        "downloads/ivan/scratch.ipynb": ("unplaced", "ivan", None),
        "downloads/nina/ex1_memory_final.ipynb": ("placed", "nina", EX1),
        "downloads/notes.txt": ("unplaced", None, None),
        "drive-download/Submissions/luke_ex1_memory.ipynb": ("placed", "luke", EX1),
        "drive-download/Submissions/mia_ex1_memory.ipynb": ("placed", "mia", EX1),
        "kim_ex2_quantization (1).ipynb": ("placed", "kim", EX2),
    }


def test_colab_notebooks_land_under_their_canonical_names(colab):
    root, _ = colab
    landed = submitted_files(root)
    assert sorted(landed) == sorted([
        "alice/ex1_memory/ex1_memory.ipynb", "alice/ex2_quantization/ex2_quantization.ipynb",
        "bob/ex2_quantization/ex2_quantization.ipynb", "carol/ex1_memory/ex1_memory.ipynb",
        "dave/ex1_memory/ex1_memory.ipynb", "erin/ex1_memory/ex1_memory.ipynb",
        "frank/ex1_memory/ex1_memory.ipynb", "grace/ex1_memory/ex1_memory.ipynb",
        "heidi/ex2_quantization/ex2_quantization.ipynb", "kim/ex2_quantization/ex2_quantization.ipynb",
        "luke/ex1_memory/ex1_memory.ipynb", "mia/ex1_memory/ex1_memory.ipynb", "nina/ex1_memory/ex1_memory.ipynb",
    ])  # no timestamp.txt: Colab names carry no submission time
    markers = {path: json.loads(text)["metadata"].get("marker") for path, text in landed.items()
               if not path.startswith("grace/")}
    assert markers["dave/ex1_memory/ex1_memory.ipynb"] == "dave new"
    assert markers["erin/ex1_memory/ex1_memory.ipynb"] == "erin new"
    assert markers["frank/ex1_memory/ex1_memory.ipynb"] == "frank"
    assert landed["grace/ex1_memory/ex1_memory.ipynb"] == BROKEN_JSON  # placed as is; grading rejects it


def test_colab_duplicates_name_the_kept_file_and_why(colab):
    records = by_path(colab[1])
    assert records["downloads/dave/Copy of ex1_memory.ipynb"]["reason"] == (
        "superseded by downloads/dave/Copy of ex1_memory (1).ipynb "
        "(its name's (n) or -n is higher: a later download or resubmission)")
    assert records["downloads/erin/ex1_memory.ipynb"]["reason"] == (
        "superseded by downloads/erin/Copy of ex1_memory.ipynb (it was modified later)")


def test_colab_unplaced_files_say_why_and_what_to_do(colab):
    records = by_path(colab[1])
    reason = {path: r["reason"] for path, r in records.items()}
    assert reason["downloads/notes.txt"].startswith("not a notebook: notes.txt")
    assert reason["downloads/ex1_memory.ipynb"].startswith("no student id in the name: ex1_memory.ipynb (rename it")
    assert reason["downloads/Jane Doe_ex1_memory.ipynb"].startswith(
        "'Jane Doe' (from the file name) cannot be a student id: only letters, digits and . _ @ - are allowed")
    assert reason["downloads/ivan/scratch.ipynb"].startswith(
        "the name does not say which exercise it is, and its cells are none of the exercises'")
    assert "rename it <student>_<exercise>.ipynb" in reason["downloads/ivan/scratch.ipynb"]
    assert records["downloads/.DS_Store"]["reason"].startswith("system file")


def test_colab_placed_files_that_grading_will_reject_carry_a_warning(colab):
    records = by_path(colab[1])
    frank, grace = records["downloads/frank_ex1_memory.ipynb"], records["downloads/grace_ex1_memory.ipynb"]
    assert frank["warning"].startswith("its cells are ex2_quantization's, not ex1_memory's: grading will reject it")
    assert frank["reason"].startswith("placed as submitted/frank/ex1_memory/ex1_memory.ipynb; but its cells are")
    assert grace["warning"].startswith("it is not a readable notebook (")
    heidi = records["downloads/heidi/Untitled0.ipynb"]
    assert heidi["warning"] is None and "its name does not say the exercise; its cells do" in heidi["reason"]
    assert records["downloads/alice/ex1_memory.ipynb"] == {
        "path": "downloads/alice/ex1_memory.ipynb", "status": "placed", "student": "alice", "assignment": EX1,
        "reason": "placed as submitted/alice/ex1_memory/ex1_memory.ipynb", "warning": None}


def test_colab_each_run_reports_the_other_exercise_as_other_assignment(colab):
    root, _ = colab
    report = by_path(json.loads((root / "downloaded" / EX1 / "collect_report.json").read_text()))
    assert report["downloads/bob_ex2_quantization.ipynb"]["status"] == "other-assignment"
    assert report["downloads/heidi/Untitled0.ipynb"]["reason"] == (
        "a submission of ex2_quantization, placed when that exercise is collected")


def test_print_report_summarises_placed_and_lists_the_rest(colab, capsys):
    collecting.print_report(colab[1])
    out = capsys.readouterr().out
    assert "Looked at 21 file(s); placed 13 notebook(s)." in out
    assert "ex1_memory" in out and "alice, carol, dave, erin, frank, grace, luke, mia, nina" in out
    assert "alice, bob, heidi, kim" in out
    for path in ("downloads/notes.txt", "downloads/ex1_memory.ipynb", "downloads/dave/Copy of ex1_memory.ipynb",
                 "downloads/frank_ex1_memory.ipynb"):
        assert path in out
    assert "Ignored 2 file(s): system files" in out and ".DS_Store\n" not in out


# ---------------------------------------------------------------------------------------- Canvas

ROSTER = """student_id,lms_id,email,name
jdoe,123456,jane.doe@uni.example,Jane Doe
jsmith,234567,john.smith@uni.example,John Smith
lee,345678,lee@uni.example,Lee Lee
"""


@pytest.fixture(scope="module")
def canvas(tmp_path_factory):
    """A Canvas download (a zip in the zip, macOS debris) and a roster missing one student."""
    root = scratch_course(tmp_path_factory.mktemp("canvas_course"))
    inputs = tmp_path_factory.mktemp("canvas_inputs")
    late = write_zip(inputs / "late_submissions.zip", {
        "leelee_345678_7891015_ex2_quantization.ipynb": notebook_text(EX2, marker="lee")})
    zipped = write_zip(inputs / "submissions.zip", {
        "doejane_123456_7891011_ex1_memory.ipynb": notebook_text(EX1, marker="jdoe first"),
        "doejane_123456_7891012_ex1_memory-1.ipynb": notebook_text(EX1, marker="jdoe resubmitted"),
        "smithjohn_LATE_234567_7891013_ex1_memory.ipynb": notebook_text(EX1, marker="jsmith"),
        "nobody_999999_7891014_ex1_memory.ipynb": notebook_text(EX1),
        "__MACOSX/._doejane_123456_7891011_ex1_memory.ipynb": "\0\5\26\7",
        "late_submissions.zip": late.read_bytes(),
    })
    roster = write(inputs / "roster.csv", ROSTER)
    records = collecting.collect([zipped], root, assignments=[EX1, EX2], roster=roster)
    return root, records


def test_canvas_every_file_gets_one_record_with_its_status(canvas):
    _, records = canvas
    assert summary(records) == {
        "submissions/__MACOSX/._doejane_123456_7891011_ex1_memory.ipynb": ("ignored", None, None),
        "submissions/doejane_123456_7891011_ex1_memory.ipynb": ("superseded", "jdoe", EX1),
        "submissions/doejane_123456_7891012_ex1_memory-1.ipynb": ("placed", "jdoe", EX1),
        "submissions/late_submissions.zip": ("ignored", None, None),
        "submissions/late_submissions/leelee_345678_7891015_ex2_quantization.ipynb": ("placed", "lee", EX2),
        "submissions/nobody_999999_7891014_ex1_memory.ipynb": ("unplaced", None, EX1),
        "submissions/smithjohn_LATE_234567_7891013_ex1_memory.ipynb": ("placed", "jsmith", EX1),
    }


def test_canvas_ids_are_mapped_through_the_roster(canvas):
    root, records = canvas
    landed = submitted_files(root)
    assert sorted(landed) == ["jdoe/ex1_memory/ex1_memory.ipynb", "jsmith/ex1_memory/ex1_memory.ipynb",
                              "lee/ex2_quantization/ex2_quantization.ipynb"]
    assert json.loads(landed["jdoe/ex1_memory/ex1_memory.ipynb"])["metadata"]["marker"] == "jdoe resubmitted"
    reason = {r["path"]: r["reason"] for r in records}
    assert reason["submissions/nobody_999999_7891014_ex1_memory.ipynb"].startswith(
        "'999999' (from Canvas) is not on the roster roster.csv: ")
    assert "add the student, or this id in an alias column such as lms_id" in reason[
        "submissions/nobody_999999_7891014_ex1_memory.ipynb"]
    assert reason["submissions/smithjohn_LATE_234567_7891013_ex1_memory.ipynb"].endswith("Canvas marked it LATE")
    assert reason["submissions/doejane_123456_7891011_ex1_memory.ipynb"].startswith(
        "superseded by submissions/doejane_123456_7891012_ex1_memory-1.ipynb (its name's (n) or -n is higher")
    assert reason["submissions/late_submissions.zip"] == "an archive: its files were unpacked into late_submissions/"


# ------------------------------------------------------------------------- Moodle, Blackboard, CLI

@pytest.fixture(scope="module")
def lms_cli(tmp_path_factory):
    """Moodle and Blackboard zips collected for Exercise 1 through the command line's run()."""
    root = scratch_course(tmp_path_factory.mktemp("lms_course"))
    inputs = tmp_path_factory.mktemp("lms_inputs")
    moodle = write_zip(inputs / "moodle.zip", {
        "Jane Doe_123456_assignsubmission_file_/ex1_memory.ipynb": notebook_text(EX1, marker="jane"),
        "John Smith_234567_assignsubmission_file_ex1_memory (1).ipynb": notebook_text(EX1, marker="john"),
    })
    blackboard = write_zip(inputs / "blackboard.zip", {
        "ex1_memory_jlee_attempt_2026-11-20-10-00-00_ex1_memory.ipynb": notebook_text(EX1, marker="first"),
        "ex1_memory_jlee_attempt_2026-11-21-09-30-00_ex1_memory.ipynb": notebook_text(EX1, marker="second"),
        "ex1_memory_jlee_attempt_2026-11-21-09-30-00.txt": "Name: J Lee\nSubmission Field: There is no ...",
    })
    parser = argparse.ArgumentParser()
    collecting.add_arguments(parser)
    args = parser.parse_args([str(moodle), str(blackboard), "--assignment", EX1, "--root", str(root)])
    return root, collecting.run(args)


def test_lms_cli_places_moodle_and_blackboard_submissions(lms_cli):
    root, code = lms_cli
    assert code == 0  # unplaced files are reported, not fatal
    landed = submitted_files(root)
    assert sorted(landed) == ["123456/ex1_memory/ex1_memory.ipynb", "234567/ex1_memory/ex1_memory.ipynb",
                              "jlee/ex1_memory/ex1_memory.ipynb", "jlee/ex1_memory/timestamp.txt"]
    assert json.loads(landed["jlee/ex1_memory/ex1_memory.ipynb"])["metadata"]["marker"] == "second"
    assert landed["jlee/ex1_memory/timestamp.txt"] == "2026-11-21 09:30:00"  # nbgrader's own format


def test_lms_cli_report_file_explains_the_rest(lms_cli):
    root, _ = lms_cli
    report = by_path(json.loads((root / "downloaded" / EX1 / "collect_report.json").read_text()))
    first = report["blackboard/ex1_memory_jlee_attempt_2026-11-20-10-00-00_ex1_memory.ipynb"]
    assert (first["status"], first["reason"]) == ("superseded", "superseded by blackboard/ex1_memory_jlee_attempt_"
                                                  "2026-11-21-09-30-00_ex1_memory.ipynb (it was submitted later)")
    assert report["blackboard/ex1_memory_jlee_attempt_2026-11-21-09-30-00.txt"]["status"] == "unplaced"
    assert report["blackboard/ex1_memory_jlee_attempt_2026-11-21-09-30-00_ex1_memory.ipynb"]["reason"] == (
        "placed as submitted/jlee/ex1_memory/ex1_memory.ipynb; submitted 2026-11-21 09:30:00 (timestamp.txt)")


@pytest.mark.parametrize("argv, message", [
    (["missing_folder"], "not found: missing_folder"),
    (["{input}", "--pattern", "(?P<who>\\w+)"], "needs a (?P<student_id>...) group"),
    (["{input}", "--roster", "{bad_roster}"], "has no student_id column (its columns: id, email)"),
])
def test_cli_usage_errors_say_what_is_wrong(tmp_path, capsys, argv, message):
    bad_roster = write(tmp_path / "roster.csv", "id,email\n1,a@b.c\n")
    notebook = write(tmp_path / "alice_ex1_memory.ipynb", notebook_text(EX1))
    parser = argparse.ArgumentParser()
    collecting.add_arguments(parser)
    argv = [a.format(input=notebook, bad_roster=bad_roster) for a in argv]
    assert collecting.run(parser.parse_args([*argv, "--root", str(tmp_path)])) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "submitted").exists()


def test_collect_leaves_an_archive_folder_it_did_not_fill_alone(tmp_path):
    archive = tmp_path / "downloaded" / EX1 / "archive"
    write(archive / "from_the_lms.zip", "")
    notebook = write(tmp_path / "in" / "alice_ex1_memory.ipynb", notebook_text(EX1))
    with pytest.raises(collecting.CollectError, match="already holds files that collect did not put there"):
        collecting.collect([notebook], tmp_path, assignments=[EX1])
    assert (archive / "from_the_lms.zip").exists()


# ------------------------------------------------------------------------------ names, roster, merge

@pytest.mark.parametrize("rel, folder, ids, exercises, extra", [
    ("downloads/bob_ex2_quantization.ipynb", None, ["bob"], [EX2], {}),
    ("downloads/ex1_memory-carol (2).ipynb", None, ["carol"], [EX1], {"version": (0, 2)}),
    ("d/Copy of Copy of EX1 Memory-3.ipynb", "dave", ["dave"], [EX1], {"version": (3, 0)}),
    ("c/doejane_LATE_123456_7891011_ex1_memory-1.ipynb", None, ["123456", "doejane"], [EX1],
     {"late": True, "version": (1, 0), "source": "Canvas"}),
    ("m/Jane Doe_123456_assignsubmission_file_Copy of ex1_memory.ipynb", None, ["123456", "Jane Doe"], [EX1], {}),
    ("m/Jane Doe_123456_assignsubmission_file_/notebook.ipynb", "Jane Doe_123456_assignsubmission_file_",
     ["123456", "Jane Doe"], [], {"source": "Moodle"}),
    ("b/ex1_memory_jdoe_attempt_2026-11-20-10-00-00_ex1_memory.ipynb", None, ["jdoe"], [EX1],
     {"timestamp": "2026-11-20-10-00-00"}),
    ("Untitled0.ipynb", None, [], [], {}),
    ("bob_ex1_memory_final.ipynb", None, [], [EX1], {}),
])
def test_read_name(rel, folder, ids, exercises, extra):
    info = collecting.read_name(rel, folder)
    assert (info.ids, info.exercises) == (ids, exercises)
    for key, value in extra.items():
        assert getattr(info, key) == value
    if not ids:
        assert info.problem


def test_read_name_with_the_instructors_pattern_replaces_the_built_in_ones():
    pattern = r"(?P<student_id>[a-z]+)/(?P<timestamp>\d{8}T\d{6})_"
    info = collecting.read_name("subs/alice/20261120T100000_ex2_quantization.ipynb", None, pattern=pattern)
    assert (info.ids, info.exercises, info.timestamp) == (["alice"], [EX2], "20261120T100000")
    assert collecting.parse_timestamp(info.timestamp).isoformat(" ") == "2026-11-20 10:00:00"
    missed = collecting.read_name("doejane_123456_7891011_ex1_memory.ipynb", None, pattern=pattern)
    assert not missed.ids and "does not match --pattern" in missed.problem


def test_read_roster_maps_every_alias_and_drops_shared_ones(tmp_path):
    roster = write(tmp_path / "r.csv", ROSTER + "kim,456789,kim@uni.example,Lee Lee\n")
    aliases = collecting.read_roster(roster)
    assert aliases["123456"] == aliases["jane.doe@uni.example"] == aliases["jane doe"] == aliases["jdoe"] == "jdoe"
    assert aliases["lee lee"] is None  # two students: names nobody
    with pytest.raises(collecting.CollectError, match="line 2: student_id 'a b' must be"):
        collecting.read_roster(write(tmp_path / "bad.csv", "student_id\na b\n"))


def test_merge_reports_keeps_the_most_specific_status():
    runs = [[{"path": "x", "status": "placed"}, {"path": "y", "status": "other-assignment"}],
            [{"path": "x", "status": "other-assignment"}, {"path": "y", "status": "unplaced"}]]
    assert [r["status"] for r in collecting.merge_reports(runs)] == ["placed", "unplaced"]


def test_staging_replaces_its_own_earlier_inputs_and_refuses_inputs_it_would_delete(tmp_path):
    archive = tmp_path / "downloaded" / EX1 / "archive"
    first, second = write(tmp_path / "a" / "x.ipynb", "{}"), write(tmp_path / "b" / "y.ipynb", "{}")
    collecting._stage([first], archive)
    collecting._stage([second], archive)  # a second collect run starts afresh
    assert sorted(p.name for p in archive.iterdir()) == ["y.ipynb"]
    with pytest.raises(collecting.CollectError, match="inputs must not be inside"):
        collecting.collect([archive], tmp_path, assignments=[EX1])
