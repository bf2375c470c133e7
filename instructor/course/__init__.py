"""Product 1, building the course: the notebooks (notebooks.py), release and solution versions and the
reference runs (build.py), the student repository (publish.py)."""
