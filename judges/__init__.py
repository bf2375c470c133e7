"""The judges: the half of each hidden check that decides, in the grading worker.

`judges/exN_*.py` draws each check's inputs (`ask_<answer>`), holds the reference answers and tolerances,
and judges the data the notebook's collector sent back (`judge_<answer>`), writing the message the student
reads. The grading engine never lets a notebook's process see this package (instructor/grading/jail.py hides
it); under stock nbgrader a check imports it into the notebook's process and judges there, which is
convenient and not forgery-proof (docs/grading.md).
"""
