"""Build the Gradescope autograder bundle: ``python -m tests.autograder.gradescope OUT.zip``.

The zip holds what Gradescope runs (``setup.sh``, ``run_autograder``) and ``source/``: the grader (this
package, the graded tests, the hidden reference, ``tests/conftest.py``, ``pytest.ini``, ``requirements.txt``)
and the handed-out ``starter/`` the questions are graded against. It holds no solution code and none of
this repository's own tests. Upload it as the assignment's autograder; Gradescope builds its image with
``setup.sh``, then for each upload runs ``run_autograder``, which grades ``/autograder/submission`` (a
folder, or the zip it holds) into ``/autograder/results/results.json``. ``AUTOGRADER_ROOT`` replaces
``/autograder`` (the bundle's own test uses a temporary root laid out the same way).
"""

from __future__ import annotations

import argparse
import os
import stat
import tempfile
import zipfile
from pathlib import Path

from .handout import write_handout

REPO_ROOT = Path(__file__).resolve().parents[2]
GRADER_PARTS = ("tests/autograder", "tests/graded", "tests/reference", "tests/conftest.py", "pytest.ini",
                "requirements.txt")

SETUP = """#!/usr/bin/env bash
# Gradescope image setup: Python and the grader's dependencies (PyTorch CPU wheels are enough).
set -euo pipefail
apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-pip >/dev/null
python3 -m pip install --quiet -r /autograder/source/requirements.txt
"""

RUN_AUTOGRADER = """#!/usr/bin/env bash
# Grade /autograder/submission into /autograder/results/results.json (never fails: the results say why).
set -u
root="${AUTOGRADER_ROOT:-/autograder}"
cd "$root/source"
submission="$root/submission"
zips=("$submission"/*.zip)
if [ -f "${zips[0]}" ] && [ "$(find "$submission" -mindepth 1 -maxdepth 1 | wc -l)" = 1 ]; then
  submission="${zips[0]}"
fi
"${PYTHON:-python3}" -m tests.autograder.classroom --one "$submission" --out "$root/results" \\
  --starter "$root/source/starter" --jobs 2 || true
"""


def bundle_files(root: Path = REPO_ROOT) -> list[Path]:
    files = []
    for part in GRADER_PARTS:
        path = root / part
        files += [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()
                                                      and "__pycache__" not in p.parts)
    return files


def build_bundle(out: Path, root: Path = REPO_ROOT) -> Path:
    """Write the bundle zip to ``out``; returns it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="siamese-tp-bundle-") as folder:
        starter = Path(folder) / "starter"
        write_handout(starter, root=root)
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, text in (("setup.sh", SETUP), ("run_autograder", RUN_AUTOGRADER)):
                info = zipfile.ZipInfo(name)
                info.external_attr = (stat.S_IFREG | 0o755) << 16
                archive.writestr(info, text)
            for path in bundle_files(root):
                archive.write(path, f"source/{path.relative_to(root).as_posix()}")
            for path in sorted(starter.rglob("*")):
                if path.is_file():
                    archive.write(path, f"source/starter/{path.relative_to(starter).as_posix()}")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="the bundle zip to write (e.g. build/gradescope-autograder.zip)")
    args = parser.parse_args(argv)
    out = build_bundle(Path(args.out).resolve())
    print(f"Gradescope bundle: {out} ({os.path.getsize(out) / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
