"""nbgrader settings for this course. The directory holding this file is the course root."""
import os
import sys

c = get_config()  # noqa: F821 - provided by nbgrader when it loads this file

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)  # the `nbgrader` command must find instructor/ (the hardened Execute step below)

from nbconvert.preprocessors import ClearMetadataPreprocessor, CSSHTMLHeaderPreprocessor  # noqa: E402
from nbgrader.preprocessors import (AssignLatePenalties, CheckCellMetadata, GetGrades,  # noqa: E402
                                    IgnorePattern, LimitOutput, SaveAutoGrades)

from instructor.grading.feedback import HideHiddenTests  # noqa: E402
from instructor.grading.kernel import GuardedExecute  # noqa: E402
from instructor.course.notebooks import COURSE_ID  # noqa: E402

c.CourseDirectory.root = here
c.CourseDirectory.course_id = COURSE_ID
c.CourseDirectory.db_url = "sqlite:///" + os.path.join(here, "gradebook.db")
c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback"]

c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.enforce_metadata = True

# nbgrader's autograde steps, with its Execute replaced by one that survives hostile notebooks
# (limits, re-running without a cell that kills the kernel: instructor/grading/kernel.py). The hidden checks
# judge in the kernel here, as stock nbgrader's do: not forgery-proof (docs/grading.md, threat model).
c.Autograde.autograde_preprocessors = [GuardedExecute, IgnorePattern, ClearMetadataPreprocessor, LimitOutput,
                                       SaveAutoGrades, AssignLatePenalties, CheckCellMetadata]

# Feedback shows what each check said, never the hidden test code (instructor/grading/feedback.py).
c.GenerateFeedback.preprocessors = [GetGrades, HideHiddenTests, CSSHTMLHeaderPreprocessor]

# Training and model loading can take minutes on a CPU: generous per-cell limit, but a limit.
c.Execute.timeout = 900
c.Execute.startup_timeout = 120
c.GuardedExecute.notebook_timeout = 3600
c.GuardedExecute.memory_limit_mb = 8192

# The solution version is a clean notebook; the executed reference run lives in autograded/reference/.
c.GenerateSolution.preprocessors = [
    "nbgrader.preprocessors.IncludeHeaderFooter",
    "nbgrader.preprocessors.LockCells",
    "nbgrader.preprocessors.ClearOutput",
    "nbgrader.preprocessors.ClearMarkScheme",
]
