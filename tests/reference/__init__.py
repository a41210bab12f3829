"""Independent reference implementations, used only as oracles by the graded tests.

Written from the TP's definitions with plain loops, NumPy, torch autograd and torchvision; nothing
here imports the code being graded. Left out of the student handout.
"""
