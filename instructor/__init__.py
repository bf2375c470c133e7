"""Instructor tooling: build the student and solution versions, autograde, report scores."""
