"""Small file helpers of the grader (it imports nothing from the project it grades)."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and ``os.replace``: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def sha256_file(path: Path) -> str | None:
    """The file's sha256, or None when it is missing or not a regular file (links are not followed)."""
    if path.is_symlink() or not path.is_file():
        return None
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


PROJECT_PACKAGES = ("exercise1", "exercise2", "utils")


def project_files(root: Path) -> list[str]:
    """The project's Python files under ``root`` (top-level modules and the project packages), relative."""
    files = [path.name for path in root.glob("*.py") if path.is_file() and not path.is_symlink()]
    for package in PROJECT_PACKAGES:
        folder = root / package
        if folder.is_dir() and not folder.is_symlink():
            files += [str(path.relative_to(root)) for path in folder.rglob("*.py")
                      if path.is_file() and not any(part.startswith(".") or part == "__pycache__"
                                                    for part in path.relative_to(root).parts)]
    return sorted(files)
