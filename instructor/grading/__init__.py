"""Product 2, grading a class. A submission's trip, one module per stage:

    collect.py    Colab downloads and LMS zips -> submitted/<student>/<exercise>/
    intake.py     the file checked before anything runs: JSON, the right exercise, test cells restored
    sandbox.py    where it runs and under which limits (namespaces: jail.py; environment, threads, memory)
    execute.py    the run: a fork server per worker, one jailed child per notebook, its channel, a watchdog
    cleanroom.py  inside that child (the student's process): capabilities dropped, seccomp, the cells
    judge.py      in the worker: each check's inputs drawn, its data judged (judges/), the verdicts
    reference.py  what a judge knows besides the data: the machine, heavy references in a process apart
    merge.py      verdicts and outputs -> the graded notebook, its scores, the notes cell
    feedback.py   feedback HTML without hidden tests
    export.py     grades.csv

worker.py grades one `Job` through intake, sandbox, execute and merge and returns a `Result`;
schedule.py hands a class's jobs to workers (threads here, or a Dask cluster) and writes the gradebook.
kernel.py is the other engine: nbgrader autograde in a Jupyter kernel with hardened Execute step
(GuardedExecute), for comparison with stock nbgrader and for the course's own reference runs.
"""
