"""Time the grader: one submission, then a class, on this machine.

    python -m tests.autograder.benchmark [--class-size 20] [--jobs 2]

The class is made of copies of this repository's solution (every question runs to the end, the slowest
case) and of the starter (every question stops at its first stub), alternating. Prints the wall time of
one submission graded alone and of the whole class; run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from .classroom import grade_class, grade_submission
from .files import project_files
from .handout import write_handout
from .points import WRITTEN

REPO_ROOT = Path(__file__).resolve().parents[2]


def copy_solution(destination: Path) -> Path:
    for relpath in project_files(REPO_ROOT) + [written.answer_file for written in WRITTEN]:
        if (REPO_ROOT / relpath).is_file():
            (destination / relpath).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(REPO_ROOT / relpath, destination / relpath)
    return destination


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--class-size", type=int, default=20, help="submissions in the class (default 20)")
    parser.add_argument("--jobs", type=int, default=2, help="submissions graded at once (default 2)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="siamese-tp-benchmark-") as folder:
        root = Path(folder)
        starter = root / "starter"
        write_handout(starter)
        solution = copy_solution(root / "solution")
        started = time.monotonic()
        one = grade_submission(solution, root / "one", starter=starter, jobs=args.jobs)
        single = time.monotonic() - started
        print(f"one submission (the solution, {one.get('score', 0):g} points): {single:.1f} s wall")
        class_dir = root / "class"
        for index in range(args.class_size):
            source = solution if index % 2 == 0 else starter
            shutil.copytree(source, class_dir / f"student{index:02d}")
        started = time.monotonic()
        rows = grade_class(class_dir, root / "grades", jobs=args.jobs, manual=None, tests=None, starter=starter,
                           timeout=1200)
        elapsed = time.monotonic() - started
        print(f"a class of {len(rows)} ({(len(rows) + 1) // 2} solutions, {len(rows) // 2} starters), --jobs "
              f"{args.jobs}: {elapsed / 60:.1f} min wall ({elapsed / len(rows):.1f} s per submission)")


if __name__ == "__main__":
    main()
