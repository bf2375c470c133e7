"""Collect student submissions into nbgrader's layout: submitted/<student>/<exercise>/<exercise>.ipynb.

Submissions arrive as a folder downloaded from Google Colab / Drive (a folder per student, or flat names
such as `bob_ex2_quantization.ipynb`) or as an LMS zip (Canvas, Moodle, Blackboard: NAME_PATTERNS below).
nbgrader's own `zip_collect` does the moving: it unpacks downloaded/<exercise>/archive/ into
downloaded/<exercise>/extracted/ (zips inside zips too) and asks a collector plugin, file by file, whose
submission each file is. `CourseCollector` is that plugin. On its first call it looks at every extracted
file at once, because only then can it keep the newest of a student's files (zip_collect gives up on
duplicates it cannot date), and it writes a report of every file, placed or not, and why:

    placed            copied to submitted/<student>/<exercise>/<exercise>.ipynb (+ timestamp.txt if dated)
    other-assignment  another exercise's file: that exercise's run places it
    superseded        an older file of the same student and exercise; the reason names the newer one
    unplaced          the instructor must act: no student id, not on the roster, not a notebook...
    ignored           __MACOSX, .DS_Store, .ipynb_checkpoints, hidden files, archives already unpacked

The exercise comes from the file name (without `Copy of `, ` (1)`, `-1`, the student's part), or when the
name does not say, from the notebook's answer and test cell ids. The student id comes from the LMS's name
format, else a folder per student, else the text before or after the exercise id in the name; a roster
CSV maps any alias (LMS id, email, name...) to the course's student_id. Of a student's several files the
newest is kept: latest timestamp in the name, else highest ` (n)` / `-n`, else latest modification time.

    python -m instructor collect downloads/ canvas.zip --roster roster.csv       # every exercise
    nbgrader zip_collect ex1_memory --collector=instructor.grading.collect.CourseCollector \\
        --CourseCollector.roster=roster.csv                                       # one, nbgrader's way

`collect()` runs zip_collect once per exercise on the same inputs and merges the runs' reports.
"""
import collections
import csv
import dataclasses
import datetime
import json
import os
import pathlib
import re
import shutil
import sys
import tarfile
import zipfile

from nbgrader.plugins.zipcollect import FileNameCollectorPlugin
from nbgrader.utils import parse_utc
from traitlets import Unicode, default

from instructor import nbgrader_ops
from instructor.grading.intake import MAX_BYTES, answer_ids
from instructor.course.notebooks import ASSIGNMENTS, ROOT, notebook_path, read_notebook

# How LMSs name downloaded submissions, tried in order on a file's name without its extension (Moodle's
# also on a folder's name). student_id: the LMS's id for the student; alias: another name a roster may
# know; rest: the name the student gave the file (it says the exercise); timestamp: the attempt's time.
NAME_PATTERNS = {
    # Jane Doe_123456_assignsubmission_file_ex1_memory, or a folder "Jane Doe_123456_assignsubmission_file_"
    "Moodle": r"(?P<alias>[^_]+)_(?P<student_id>\d+)_assignsubmission_[a-z]+_(?P<rest>.*)",
    # ex1_memory_jdoe_attempt_2026-11-20-10-00-00_ex1_memory
    "Blackboard": r".+_(?P<student_id>[^_]+)_attempt_(?P<timestamp>\d{4}(?:-\d\d){5})(?:_(?P<rest>.*))?",
    # doejane_123456_7891011_ex1_memory-1, doejane_LATE_123456_7891011_ex1_memory
    "Canvas": r"(?P<alias>[^_]+)_(?P<late>LATE_)?(?P<student_id>\d+)_\d+_(?P<rest>.+)",
}
COPY_OF = re.compile(r"(?<![A-Za-z0-9])copy[ _]of[ _]+", re.I)  # Drive's "Copy of ", as often as it was copied
REDOWNLOAD = re.compile(r"\s*\((\d+)\)$")  # a browser's or Drive's second download: "ex1_memory (1)"
RESUBMISSION = re.compile(r"-(\d{1,3})$")  # Canvas's resubmissions: "ex1_memory-1", "-2"
SEPARATORS = " _-."
SAFE_ID = re.compile(r"[A-Za-z0-9_@-][A-Za-z0-9._@-]*")  # becomes a folder name under submitted/
SYSTEM_NAMES = {"__MACOSX", "Thumbs.db", "desktop.ini", "__pycache__"}  # plus anything starting with "."
STATUS_ORDER = ["placed", "superseded", "unplaced", "other-assignment", "ignored"]  # most specific first
REPORT_NAME = "collect_report.json"  # beside archive/ and extracted/, in downloaded/<exercise>/
STAGED_NAME = "staged_by_collect.txt"  # says collect() filled archive/, so it may empty it next time


class CollectError(ValueError):
    """A usage problem (missing input, bad roster or pattern): nothing was collected."""


@dataclasses.dataclass
class NameInfo:
    """What a file's name (and folder) says about it."""
    ids: list  # candidate student ids, the LMS's own first; empty when the name has none
    source: str  # where the ids came from, for messages
    exercises: list  # the exercise ids the name mentions
    timestamp: str = None
    version: tuple = (0, 0)  # (Canvas resubmission, re-download) numbers: higher is newer
    late: bool = False
    problem: str = None  # why there are no ids


@dataclasses.dataclass
class Seen:
    """One extracted file and what became of it."""
    path: str  # relative to extracted/, with "/"
    status: str
    student: str = None
    assignment: str = None
    reason: str = ""
    warning: str = None  # placed, but grading will likely reject it: worth a look
    timestamp: datetime.datetime = None
    version: tuple = (0, 0)
    mtime: float = 0.0

    def record(self) -> dict:
        return {"path": self.path, "status": self.status, "student": self.student,
                "assignment": self.assignment, "reason": self.reason, "warning": self.warning}


# ---------------------------------------------------------------------------------------------- names

def clean_name(name: str):
    """Drop what Drive, browsers and Canvas add to a file name: (clean name, (resubmission, re-download))."""
    name = COPY_OF.sub("", name).strip()
    redownload = resubmission = 0
    if match := REDOWNLOAD.search(name):
        redownload, name = int(match.group(1)), name[:match.start()]
    if match := RESUBMISSION.search(name):
        resubmission, name = int(match.group(1)), name[:match.start()]
    return name.strip(), (resubmission, redownload)


def _exercise_pattern(assignment: str):
    # "ex1_memory", "EX1 memory", "ex1-memory"; not inside a longer word.
    words = re.escape(assignment).replace("_", "[ _-]")
    return re.compile(rf"(?<![A-Za-z0-9]){words}(?![A-Za-z0-9])", re.I)


def exercises_in(name: str, assignments) -> list:
    """[(exercise, match)] for each exercise id the name mentions."""
    found = [(a, _exercise_pattern(a).search(name)) for a in assignments]
    return [(a, m) for a, m in found if m]


def read_name(rel: str, student_folder: str = None, assignments=ASSIGNMENTS, pattern: str = None) -> NameInfo:
    """What the file at `rel` (a path relative to extracted/) says by its name about whose and which it is.

    `student_folder`: the folder taken as one student's (None at the top of a download).
    `pattern`: the instructor's regex, searched in `rel`, replacing NAME_PATTERNS.
    """
    stem = pathlib.PurePosixPath(rel).stem
    if pattern:
        return _read_with_pattern(rel, stem, assignments, pattern)
    for lms, lms_pattern in NAME_PATTERNS.items():
        if match := re.fullmatch(lms_pattern, stem):
            return _read_lms(lms, match, match["rest"] or "", assignments)
    if student_folder and (match := re.fullmatch(NAME_PATTERNS["Moodle"], student_folder)):
        return _read_lms("Moodle", match, stem, assignments)  # Moodle's folder per student
    clean, version = clean_name(stem)
    found = exercises_in(clean, assignments)
    info = NameInfo([], "", [a for a, _ in found], version=version)
    if student_folder:
        info.ids, info.source = [student_folder], f"the folder {student_folder}/"
    elif len(found) == 1:
        _student_around(info, clean, found[0][1])
    if not info.ids and not info.problem:
        info.problem = (f"no student id in the name: {pathlib.PurePosixPath(rel).name} (rename it "
                        f"<student>_<exercise>.ipynb, put it in a folder named after the student, or pass --pattern)")
    return info


def _read_lms(lms, match, own_name, assignments) -> NameInfo:
    clean, version = clean_name(own_name)
    ids = [i for i in (match["student_id"], match.groupdict().get("alias")) if i]
    return NameInfo(ids, lms, [a for a, _ in exercises_in(clean, assignments)], match.groupdict().get("timestamp"),
                    version, bool(match.groupdict().get("late")))


def _student_around(info: NameInfo, clean: str, match):
    """The student's part of a flat name: the text before or after the exercise id."""
    before, after = clean[:match.start()].strip(SEPARATORS), clean[match.end():].strip(SEPARATORS)
    if before and after:
        info.problem = (f"cannot tell the student id in {clean!r}: {before!r} or {after!r}? Rename it "
                        "<student>_<exercise>.ipynb or pass --pattern")
    elif before or after:
        info.ids, info.source = [before or after], "the file name"


def _read_with_pattern(rel, stem, assignments, pattern) -> NameInfo:
    match = re.search(pattern, rel)
    if not match or not match["student_id"]:
        return NameInfo([], "--pattern", [], problem=f"the name does not match --pattern {pattern!r}")
    groups = match.groupdict()
    clean, version = clean_name(groups.get("file_id") or stem)
    return NameInfo([groups["student_id"]], "--pattern", [a for a, _ in exercises_in(clean, assignments)],
                    groups.get("timestamp"), version)


def parse_timestamp(text: str):
    """A datetime from Blackboard's 2026-11-20-10-00-00 or anything nbgrader reads; None if unreadable."""
    if match := re.fullmatch(r"(\d{4})-(\d\d)-(\d\d)[-_ T](\d\d)[-:](\d\d)[-:](\d\d)", text):
        try:
            return datetime.datetime(*map(int, match.groups()))
        except ValueError:
            return None
    try:
        return parse_utc(text)
    except (ValueError, OverflowError):
        return None


# --------------------------------------------------------------------------------------------- roster

def read_roster(path) -> dict:
    """alias -> student_id for every value of every column (student_id, lms_id, email, name...), case-folded.

    A value several students share (a section, a common name) maps to None: it identifies nobody.
    """
    path = pathlib.Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            columns, rows = reader.fieldnames or [], list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise CollectError(f"cannot read the roster {path}: {error}") from None
    if "student_id" not in columns:
        raise CollectError(f"the roster {path} has no student_id column (its columns: {', '.join(columns) or 'none'})")
    aliases = {}
    for line, row in enumerate(rows, start=2):
        student = (row["student_id"] or "").strip()
        if not SAFE_ID.fullmatch(student):
            raise CollectError(f"the roster {path}, line {line}: student_id {student!r} must be letters, digits "
                               "and . _ @ - only (it becomes a folder name)")
        for column, value in row.items():
            key = value.strip().casefold() if column and isinstance(value, str) else ""
            if key:
                aliases[key] = student if aliases.get(key, student) == student else None
    return aliases


# --------------------------------------------------------------------------------------------- files

def _is_system(rel: str) -> bool:
    return any(part.startswith(".") or part in SYSTEM_NAMES for part in rel.split("/"))


def _archive_stem(name: str, zip_ext):
    """The folder nbgrader unpacks an archive called `name` into, or None if it is not an archive."""
    stem, ext = os.path.splitext(name)
    if ext not in zip_ext:
        return None
    inner, inner_ext = os.path.splitext(stem)
    return inner if inner_ext == ".tar" else stem


def _member_mtimes(path: pathlib.Path) -> dict:
    """name -> modification time of each file in an archive (nbgrader's unpacking loses them)."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                return {i.filename: datetime.datetime(*i.date_time).timestamp()
                        for i in archive.infolist() if not i.is_dir()}
        with tarfile.open(path) as archive:
            return {m.name: float(m.mtime) for m in archive.getmembers() if m.isfile()}
    except (OSError, tarfile.TarError, zipfile.BadZipFile, ValueError):
        return {}


def _files_under(base: pathlib.Path) -> list:
    return sorted(p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file()) if base.is_dir() else []


def unpacked_archives(archive_root: pathlib.Path, extracted_root: pathlib.Path, zip_ext):
    """(the folders archives were unpacked into, the original modification time of each extracted file).

    Files are relative to extracted/: a file archive/x is extracted/x, a member m of archive/d/a.zip
    is extracted/d/a/m, and so on for the zips inside (they stay in extracted/ beside their folders).
    """
    folders, mtimes = set(), {}
    for base in (archive_root, extracted_root):
        for rel in _files_under(base):
            stem = _archive_stem(pathlib.PurePosixPath(rel).name, zip_ext)
            if stem is None:
                if base == archive_root:
                    mtimes[rel] = (base / rel).stat().st_mtime
                continue
            folder = str(pathlib.PurePosixPath(rel).parent / stem)
            folders.add(folder)
            mtimes.update({f"{folder}/{member}": t for member, t in _member_mtimes(base / rel).items()})
    return folders, mtimes


def _owning_folder(rel: str, archive_folders: set) -> pathlib.PurePosixPath:
    """The folder a file is in, looking through folders archives were unpacked into: canvas.zip's
    files are at the top of that download, alice/work.zip's are in alice/."""
    folder = pathlib.PurePosixPath(rel).parent
    while str(folder) in archive_folders:
        folder = folder.parent
    return folder


def shared_folders(files, archive_folders: set, assignments=ASSIGNMENTS) -> set:
    """Folders that are not one student's: those holding folders of their own (the Drive folder above the
    students' folders; unpacked archives and system folders do not count), and those holding files whose
    names give different students (bob_ex1_memory.ipynb beside carol_ex1_memory.ipynb)."""
    shared, named = set(), collections.defaultdict(set)
    for rel in files:
        parents = list(reversed(pathlib.PurePosixPath(rel).parents))[1:]  # without "."
        for parent, child in zip(parents, parents[1:]):
            if str(child) not in archive_folders and not _is_system(child.name):
                shared.add(str(parent))
        if not _is_system(rel):
            named[str(_owning_folder(rel, archive_folders))].update(read_name(rel, None, assignments).ids[:1])
    return shared | {folder for folder, ids in named.items() if len(ids) > 1}


def student_folder(rel: str, archive_folders: set, shared: set):
    """The name of the folder holding one student's files, or None for a file at the top of a download."""
    folder = _owning_folder(rel, archive_folders)
    return None if str(folder) == "." or str(folder) in shared else folder.name


# -------------------------------------------------------------------------------------------- plugin

class CourseCollector(FileNameCollectorPlugin):
    """nbgrader zip_collect's collector for this course: see the module docstring."""

    assignment = Unicode(help="The exercise being collected (default: zip_collect's ASSIGNMENT).").tag(config=True)
    roster = Unicode("", help="CSV with a student_id column and any alias columns (lms_id, email, name...); "
                              "ids found in file names are mapped through it.").tag(config=True)
    report = Unicode(help=f"Where to write the JSON report (default: downloaded/<exercise>/{REPORT_NAME}).").tag(
        config=True)

    _plan = None  # absolute path -> Seen, made on the first collect() call

    @default("assignment")
    def _default_assignment(self):
        return getattr(getattr(self.parent, "coursedir", None), "assignment_id", "")

    @default("report")
    def _default_report(self):
        return str(self._folders()[1].parent / REPORT_NAME)

    def _folders(self):
        app = self.parent  # ZipCollectApp: where it unpacks to
        return tuple(pathlib.Path(app._format_collect_path(step))
                     for step in (app.archive_directory, app.extracted_directory))

    def collect(self, submitted_file: str):
        if self._plan is None:
            self._plan = self._make_plan()
        seen = self._plan.get(os.path.abspath(submitted_file))
        if seen is None or seen.status != "placed":
            return None
        return {"student_id": seen.student, "file_id": f"{self.assignment}.ipynb",
                "timestamp": seen.timestamp.isoformat(" ") if seen.timestamp else None}

    # The plan: every extracted file looked at once.

    def _make_plan(self) -> dict:
        archive_root, extracted_root = self._folders()
        zip_ext = getattr(getattr(self.parent, "extractor_plugin_inst", None), "zip_ext", [".zip", ".gz"])
        archive_folders, mtimes = unpacked_archives(archive_root, extracted_root, zip_ext)
        files = _files_under(extracted_root)
        self._aliases = read_roster(self.roster) if self.roster else None
        self._exercises = list(dict.fromkeys([*ASSIGNMENTS, self.assignment]))
        shared = shared_folders(files, archive_folders, self._exercises)
        self._releases = self._release_ids()
        seen = []
        for rel in files:
            seen.append(self._classify(rel, extracted_root / rel, student_folder(rel, archive_folders, shared),
                                       archive_folders, zip_ext))
            seen[-1].mtime = mtimes.get(rel) or (extracted_root / rel).stat().st_mtime
        keep_newest(seen)
        self._write_report(seen)
        return {os.path.abspath(extracted_root / s.path): s for s in seen}

    def _release_ids(self) -> dict:
        root = getattr(getattr(self.parent, "coursedir", None), "root", ROOT)
        paths = {a: notebook_path(a, "release", root) for a in self._exercises}
        return {a: answer_ids(read_notebook(p)) for a, p in paths.items() if p.exists()}

    def _classify(self, rel, path, folder, archive_folders, zip_ext) -> Seen:
        """What becomes of one extracted file; `folder` is its student's folder, if any. Duplicates come later."""
        name = pathlib.PurePosixPath(rel).name
        if _is_system(rel):
            return Seen(rel, "ignored", reason="system file (macOS, Jupyter or hidden file)")
        stem = _archive_stem(name, zip_ext)
        if stem is not None and str(pathlib.PurePosixPath(rel).parent / stem) in archive_folders:
            return Seen(rel, "ignored", reason=f"an archive: its files were unpacked into {stem}/")
        if os.path.splitext(name)[1] not in self.valid_ext:
            return Seen(rel, "unplaced", reason=f"not a notebook: {name} (only {', '.join(self.valid_ext)} "
                                                "files are collected)")
        info = read_name(rel, folder, self._exercises, self.named_regexp or None)
        student, student_problem = self._student(info)
        assignment, warning, problem = self._assignment(info.exercises, path)
        seen = Seen(rel, "unplaced", student, assignment, version=info.version)
        if assignment and assignment != self.assignment:
            seen.status = "other-assignment"
            seen.reason = f"a submission of {assignment}, placed when that exercise is collected"
        elif student_problem or problem:
            seen.reason = student_problem or problem
        else:
            self._place(seen, info, warning)
        return seen

    def _place(self, seen: Seen, info: NameInfo, warning):
        seen.status = "placed"
        seen.reason = f"placed as submitted/{seen.student}/{self.assignment}/{self.assignment}.ipynb"
        notes = [f"but {warning}"] if warning else []
        if info.timestamp:
            seen.timestamp = parse_timestamp(info.timestamp)
            notes.append(f"submitted {seen.timestamp.isoformat(' ')} (timestamp.txt)" if seen.timestamp else
                         f"its timestamp {info.timestamp!r} could not be read, so it is not used")
        if not info.exercises:
            notes.append("its name does not say the exercise; its cells do")
        if info.late:
            notes.append(f"{info.source} marked it LATE")
        if notes:
            seen.reason += "; " + "; ".join(notes)
        seen.warning = warning

    def _student(self, info: NameInfo):
        """(student_id, None) or (None, why there is none)."""
        if not info.ids:
            return None, info.problem
        if self._aliases is not None:
            roster, found = pathlib.Path(self.roster).name, f"{info.ids[0]!r} (from {info.source})"
            for candidate in info.ids:
                if self._aliases.get(candidate.casefold()):
                    return self._aliases[candidate.casefold()], None
            if any(candidate.casefold() in self._aliases for candidate in info.ids):
                return None, (f"{found} names several students on the roster {roster}: make it name one, "
                              "or rename the file after the student_id")
            return None, (f"{found} is not on the roster {roster}: add the student, or this id in an alias "
                          "column such as lms_id, and collect again")
        if not SAFE_ID.fullmatch(info.ids[0]):
            return None, (f"{info.ids[0]!r} (from {info.source}) cannot be a student id: only letters, digits and "
                          ". _ @ - are allowed. Map it to one with a roster (--roster) or rename the file")
        return info.ids[0], None

    def _assignment(self, named: list, path: pathlib.Path):
        """(exercise, warning, None) or (None, None, why the exercise cannot be told)."""
        if len(named) > 1:
            return None, None, f"the name mentions several exercises ({', '.join(named)}); rename it"
        if named and named[0] != self.assignment:
            return named[0], None, None  # its own exercise's run reads it
        by_cells, why_not = self._exercise_of_cells(path)
        if named and by_cells == named[0]:
            return named[0], None, None
        if named:  # the name wins; grading (instructor/grading/intake.py) rejects it with its own message
            what = f"its cells are {by_cells}'s, not {named[0]}'s" if by_cells else why_not
            return named[0], f"{what}: grading will reject it, so ask the student for the right file", None
        if by_cells:
            return by_cells, None, None
        return None, None, (f"the name does not say which exercise it is, and {why_not}: rename it "
                            f"<student>_<exercise>.ipynb")

    def _exercise_of_cells(self, path: pathlib.Path):
        """(the exercise whose answer and test cells the notebook has, None) or (None, why not)."""
        if path.stat().st_size > MAX_BYTES:
            return None, f"it is too large to be a notebook ({path.stat().st_size / 2**20:,.0f} MB)"
        try:
            ids = answer_ids(json.loads(path.read_text(encoding="utf-8")))
        except (UnicodeDecodeError, ValueError) as error:
            return None, f"it is not a readable notebook ({str(error).splitlines()[0][:120]})"
        except (AttributeError, TypeError):
            return None, "it is JSON but not a Jupyter notebook"
        matches = [a for a, release_ids in self._releases.items() if ids & release_ids]
        if len(matches) == 1:
            return matches[0], None
        if matches:
            return None, f"its cells belong to several exercises ({', '.join(matches)})"
        return None, "its cells are none of the exercises' (no answer or test cell of any release notebook)"

    def _write_report(self, seen: list):
        report = pathlib.Path(self.report)
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps([s.record() for s in seen], indent=1) + "\n", encoding="utf-8")
        for s in seen:  # instructors running `nbgrader zip_collect` themselves see the report in its log too
            log = self.log.warning if s.status == "unplaced" or s.warning else self.log.info
            log("%s %s: %s", s.status, s.path, s.reason)
        self.log.info("Collect report: %s", report)


# Which of a student's files is newest: the first of these that tells them apart decides.
NEWER_BECAUSE = ["it has a submission time and this one has none", "it was submitted later",
                 "its name's (n) or -n is higher: a later download or resubmission", "it was modified later",
                 "they look the same and its name sorts later"]


def _newness(seen: Seen) -> tuple:
    return (seen.timestamp is not None, seen.timestamp or datetime.datetime.min, seen.version, seen.mtime, seen.path)


def keep_newest(seen: list):
    """Of several placed files of one student, keep the newest; the others become `superseded`."""
    by_student = collections.defaultdict(list)
    for s in seen:
        if s.status == "placed":
            by_student[s.student].append(s)
    for files in by_student.values():
        kept = max(files, key=_newness)
        for s in files:
            if s is not kept:
                why = next(NEWER_BECAUSE[i] for i, (a, b) in enumerate(zip(_newness(kept), _newness(s))) if a != b)
                s.status, s.warning = "superseded", None
                s.reason = f"superseded by {kept.path} ({why})"


# ----------------------------------------------------------------------------------- whole collection

def _stage(inputs: list, archive: pathlib.Path):
    """Put the inputs in archive/ as zip_collect expects: zips and files as they are, folders zipped.

    A folder is zipped so that nbgrader unpacks it into a folder of its own name, which is then the
    top of that download (its sub-folders are the students'), as for any zip.
    """
    marker = archive.parent / STAGED_NAME
    if archive.is_dir() and any(archive.iterdir()) and not marker.exists():
        raise CollectError(f"{archive} already holds files that collect did not put there; move them away "
                           "(or pass them as inputs) and run again")
    shutil.rmtree(archive, ignore_errors=True)
    archive.mkdir(parents=True)
    for source in inputs:
        if source.is_dir():
            with zipfile.ZipFile(archive / f"{source.name}.zip", "w", zipfile.ZIP_DEFLATED) as zipped:
                for path in sorted(source.rglob("*")):
                    if path.is_file():
                        zipped.write(path, path.relative_to(source).as_posix())
        else:
            shutil.copy2(source, archive / source.name)  # copy2: the modification time may break a tie
    marker.write_text("\n".join(str(s) for s in inputs) + "\n")


def _checked_inputs(inputs, root: pathlib.Path) -> list:
    paths = [pathlib.Path(i).resolve() for i in inputs]
    if not paths:
        raise CollectError("no input given: pass the downloaded folders, zips or notebooks")
    missing = [str(i) for i, p in zip(inputs, paths) if not p.exists()]
    if missing:
        raise CollectError(f"not found: {', '.join(missing)}")
    downloaded = (root / "downloaded").resolve()
    inside = [str(i) for i, p in zip(inputs, paths) if p == downloaded or downloaded in p.parents]
    if inside:  # collect empties downloaded/<exercise>/archive/ and extracted/ on every run
        raise CollectError(f"inputs must not be inside {downloaded}, which collect rewrites: {', '.join(inside)}")
    staged = [p.name + (".zip" if p.is_dir() else "") for p in paths]
    clashes = sorted({n for n in staged if staged.count(n) > 1})
    if clashes:
        raise CollectError(f"two inputs would both be called {', '.join(clashes)}; rename one")
    broken = [str(p) for p in paths if p.suffix == ".zip" and not zipfile.is_zipfile(p)]
    if broken:
        raise CollectError(f"not a readable zip: {', '.join(broken)} (download it again)")
    return paths


def _checked_pattern(pattern):
    try:
        compiled = re.compile(pattern)
    except re.error as error:
        raise CollectError(f"--pattern {pattern!r} is not a valid regular expression: {error}") from None
    if "student_id" not in compiled.groupindex:
        raise CollectError(f"--pattern {pattern!r} needs a (?P<student_id>...) group")


def collect(inputs, root=ROOT, assignments=None, roster=None, pattern=None) -> list:
    """Collect the downloaded `inputs` (folders, zips, notebooks) for each exercise; one record per file.

    Each exercise's run of `nbgrader zip_collect` places that exercise's notebooks under
    <root>/submitted/ and reports on every file; a file keeps the most specific of its records
    (placed by its own exercise's run rather than "other-assignment" in the others).
    """
    root = pathlib.Path(root)
    assignments = list(assignments or ASSIGNMENTS)
    unknown = [a for a in assignments if a not in ASSIGNMENTS]
    if unknown:
        raise CollectError(f"unknown exercise(s) {', '.join(unknown)}; choose from {', '.join(ASSIGNMENTS)}")
    paths = _checked_inputs(inputs, root)
    args = []
    if roster:
        roster = pathlib.Path(roster).resolve()
        read_roster(roster)  # says what is wrong with it here, rather than from inside nbgrader
        args.append(f"--CourseCollector.roster={roster}")
    if pattern:
        _checked_pattern(pattern)
        args.append(f"--CourseCollector.named_regexp={pattern}")
    reports = []
    for assignment in assignments:
        downloaded = root / "downloaded" / assignment
        _stage(paths, downloaded / "archive")
        report = downloaded / REPORT_NAME
        report.unlink(missing_ok=True)
        nbgrader_ops._run(["zip_collect", assignment, "--force", "--collector=instructor.grading.collect.CourseCollector",
                           f"--CourseCollector.report={report}", *args], root)
        reports.append(json.loads(report.read_text(encoding="utf-8")) if report.exists() else [])
    return merge_reports(reports)


def merge_reports(reports) -> list:
    """One record per file: the most specific status any run gave it (STATUS_ORDER)."""
    best = {}
    for records in reports:
        for record in records:
            old = best.get(record["path"])
            if old is None or STATUS_ORDER.index(record["status"]) < STATUS_ORDER.index(old["status"]):
                best[record["path"]] = record
    return sorted(best.values(), key=lambda r: r["path"])


def print_report(records, file=None):
    """Placed per exercise, then every file not placed (and every placed one worth a look), with why."""
    file = file or sys.stdout
    placed = collections.defaultdict(list)
    for r in records:
        if r["status"] == "placed":
            placed[r["assignment"]].append(r["student"])
    print(f"Looked at {len(records)} file(s); placed {sum(map(len, placed.values()))} notebook(s).", file=file)
    course_order = {a: i for i, a in enumerate(ASSIGNMENTS)}
    for assignment in sorted(placed, key=lambda a: (course_order.get(a, len(course_order)), a)):
        students = sorted(placed[assignment])
        print(f"  {assignment:26s} {len(students):3d}  {', '.join(students)}", file=file)
    rows = [r for r in records if r["status"] not in ("placed", "ignored") or r.get("warning")]
    rows.sort(key=lambda r: (STATUS_ORDER.index(r["status"]), r["path"]))
    if rows:
        width = min(max(len(r["path"]) for r in rows), 60)
        print(f"\n{'status':17s} {'file':{width}s}  reason", file=file)
        for r in rows:
            status = "placed (check)" if r["status"] == "placed" else r["status"]
            print(f"{status:17s} {r['path']:{width}s}  {r['reason']}", file=file)
    ignored = [r for r in records if r["status"] == "ignored"]
    if ignored:
        print(f"\nIgnored {len(ignored)} file(s): system files (__MACOSX, .DS_Store, .ipynb_checkpoints, hidden "
              "files) and archives already unpacked.", file=file)
    if any(r["status"] == "unplaced" for r in records):
        print("\nFix the unplaced files (rename them, or add the students to the roster) and run collect again.",
              file=file)


# ----------------------------------------------------------------------------------------------- CLI

def add_arguments(parser):
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="folders, zips or notebooks downloaded from Colab/Drive or an LMS")
    parser.add_argument("--assignment", action="append", choices=ASSIGNMENTS, metavar="ID",
                        help=f"exercise to collect, repeatable (default: all of {', '.join(ASSIGNMENTS)})")
    parser.add_argument("--roster", metavar="CSV",
                        help="student_id column plus alias columns (lms_id, email, name...) mapped to it")
    parser.add_argument("--pattern", metavar="REGEX",
                        help="regex searched in each file's path, with (?P<student_id>...) and optionally "
                             "(?P<timestamp>...); replaces the built-in Colab/Canvas/Moodle/Blackboard names")
    parser.add_argument("--root", type=pathlib.Path, default=ROOT, help="course root (default: this repository)")


def run(args) -> int:
    """Collect, print the report; 2 on a usage error, 1 if nbgrader failed, else 0 (unplaced files included)."""
    try:
        records = collect(args.inputs, args.root, args.assignment, args.roster, args.pattern)
    except CollectError as error:
        print(f"collect: {error}", file=sys.stderr)
        return 2
    except nbgrader_ops.NbgraderFailed as error:
        print(error, file=sys.stderr)
        return 1
    print_report(records)
    return 0
