"""The graded tests: one module per question of the TP, points in tests/autograder/points.py.

Each test loads the submission's files through the ``submission`` fixture (never by import), compares
against tests/reference/ on small random inputs (several seeds, fixed tolerances), and fails with a
message a student can act on. Left out of the student handout.
"""
