"""The autograder: grade students' copies of this repository, one or a class, without trusting their code.

- ``points.py``: the points table (code questions and their tests; written questions and their rubrics).
- ``engine.py``, ``sandbox.py``, ``questions.py``: per code question, a private workspace (the starter with
  that question's student files), the inputs, and a sandboxed child (``child/``: the runner, the probes that
  call student code, the test doubles) whose plain-data answers come back to the trusted process.
- ``plugin.py``, ``reasons.py``, ``written.py``, ``audit.py``: the pytest plugin that scores the graded tests
  (``tests/graded/``, compared with ``tests/reference/``), the reasons a student reads, the marking sheets
  and ``--manual`` marks, and the audit block of ``results.json``.
- ``handout.py``: ``python -m tests.autograder.handout OUT`` writes the student starter.
- ``classroom.py``: ``python -m tests.autograder.classroom CLASS_DIR --out DIR`` grades a class (or ``--one``).
- ``gradescope.py``: ``python -m tests.autograder.gradescope OUT.zip`` builds the Gradescope bundle.
- ``similarity.py``, ``regrade.py``: the class's similarity report; re-grading a submission to check a grade.
- ``benchmark.py``: the grader's timings on this machine.

Usage: ``python -m pytest --submission=PATH`` grades the repository at PATH (default: this one).
"""
