"""The collectors: the half of each hidden check that runs in the notebook's process.

Each exercise has a module `graders/exN_*.py` of `check_<answer>(ns)` functions, which the hidden test cells
call with the notebook's `globals()`. A collector calls the student's names on the inputs the judge hands over
and returns plain data; it knows nothing of what is right (no expected value, tolerance or reference answer
lives here), because the notebook's process, which may read and change anything in it, is the student's. The
verdict is the judge's (judges/, in the grading worker). Not published to students, though nothing here would
help them: the course's student repository holds only release/, utils/ and colab_setup.py.
"""
