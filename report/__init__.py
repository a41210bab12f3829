"""The TP report, built from the logged runs by ``python report/build.py``."""
