"""The autograder: grade a student's copy of this repository question by question.

- ``points.py``: the points table (every graded question, its tests and their points; total 100).
- ``loader.py``: loads the submission's files by location under unique module names.
- ``plugin.py``: the pytest plugin that scores each graded test and writes ``grades/results.json``
  (Gradescope's schema) and ``grades/summary.md``.
- ``reasons.py``: turns a failure into the one line a student reads.
- ``handout.py``: ``python -m tests.autograder.handout OUT`` writes the student starter repository.

Usage: ``python -m pytest --submission=PATH`` grades the repository at PATH (default: this one).
"""
