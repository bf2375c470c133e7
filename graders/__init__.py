"""Checks that the notebooks' hidden test cells call. Instructor-side: these modules hold reference
implementations, so they are never published to students (only release/, utils/ and colab_setup.py are).

Each exercise has a module `graders/exN_*.py` of `check_<answer>(ns)` functions. `ns` is the notebook's
`globals()`: a check looks the answer up by name, so a missing definition gets a clear message, and it
can swap in reference versions of the answer's dependencies so each answer is graded on its own."""
