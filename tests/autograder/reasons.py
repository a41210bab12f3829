"""One line telling a student why a graded test gave 0."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .loader import SubmissionError, is_under

MAX_REASON_CHARS = 300
TIMEOUT_PATTERN = re.compile(r"Timeout \(?>?\s*([\d.]+)\s*s\)?")


def _chain(error: BaseException) -> list[BaseException]:
    """``error`` and its causes/contexts, outermost first."""
    seen: list[BaseException] = []
    while error is not None and error not in seen:
        seen.append(error)
        error = error.__cause__ or error.__context__
    return seen


def _clean(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 3] + "..."


def _first_line(error: BaseException) -> str:
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return lines[0].strip() if lines else ""


def _location(excinfo: Any, submission_root: Path) -> str:
    """``file:line`` of the innermost traceback frame in the submission's own code (not its tests)."""
    tests_dir = submission_root / "tests"
    for entry in reversed(list(excinfo.traceback)):
        path = Path(str(entry.path))
        if is_under(path, submission_root) and not is_under(path, tests_dir):
            return f"{path.resolve().relative_to(submission_root)}:{entry.lineno + 1}"
    return ""


def reason_for(excinfo: Any, submission_root: Path) -> str:
    """The one-line reason for a failure, from pytest's ``ExceptionInfo``.

    Order: a timeout, then "not implemented" (a ``NotImplementedError`` anywhere in the chain or named
    in the message, as the handout's stubs raise), then the grader's own messages (missing file, failed
    import, failed check), then any other exception with the submission line that raised it.
    """
    error = excinfo.value
    message = _first_line(error)
    timeout = TIMEOUT_PATTERN.search(message) if type(error).__name__ == "Failed" else None
    if timeout:
        return _clean(f"timed out after {float(timeout.group(1)):g} s (a loop that never ends, or far too slow "
                      "for a tiny input)")
    for link in _chain(error):
        if isinstance(link, NotImplementedError):
            detail = _first_line(link)
            return _clean(f"not implemented ({detail})" if detail else "not implemented")
    if "NotImplementedError" in str(error):
        detail = str(error).split("NotImplementedError", 1)[1].lstrip(":( ").splitlines()[0].rstrip(")'\" ")
        return _clean(f"not implemented ({detail})" if detail else "not implemented")
    if isinstance(error, SubmissionError):
        return _clean(message)
    if isinstance(error, AssertionError):
        return _clean(message or "a check failed")
    if type(error).__name__ in ("Failed", "Skipped"):
        return _clean(message)
    where = _location(excinfo, submission_root)
    text = f"{type(error).__name__}: {message}" if message else type(error).__name__
    return _clean(f"raised {text}" + (f" (at {where})" if where else ""))
