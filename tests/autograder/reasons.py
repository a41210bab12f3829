"""The one line a student reads when a graded check gives 0: always the grader's own words.

Text produced by student code (an exception message) appears only as the exception's type and a short,
sanitised first line; everything else (what was called, on which input, expected vs got) is written here
or in the graded tests, which format numbers only.
"""

from __future__ import annotations

import re
from typing import Any

MAX_REASON_CHARS = 300
STUDENT_LINE_CHARS = 100
STUB_LABEL = re.compile(r"^Ex[12] Q[1-7]: [A-Za-z_][\w.]{0,60}$")
IDENTIFIER = re.compile(r"^[A-Za-z_]\w{0,59}$")
WHERE = re.compile(r"^[\w./-]{1,120}\.py:\d{1,7}$")
TIMEOUT_PATTERN = re.compile(r"Timeout \(?>?\s*([\d.]+)\s*s\)?")


def clean(text: str, limit: int = MAX_REASON_CHARS) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def sanitise(text: Any, limit: int = STUDENT_LINE_CHARS) -> str:
    """A student-produced line made harmless: printable ASCII, no paths of the grading machine, short."""
    line = str(text).splitlines()[0] if str(text).strip() else ""
    line = "".join(char if 32 <= ord(char) < 127 else "?" for char in line)
    line = re.sub(r"(/[^\s/:'\"]+){2,}", "<path>", line)
    return clean(line, limit)


def probe_reason(record: dict[str, Any], limits: Any) -> str:
    """The reason for a failed probe, from the child's failure record (which is untrusted data)."""
    kind = record.get("kind")
    error_type = str(record.get("type", ""))
    error_type = error_type if IDENTIFIER.match(error_type) else "an exception"
    where = str(record.get("where", ""))
    at = f" (at {where})" if WHERE.match(where) else ""
    if kind == "not_implemented":
        label = str(record.get("line", "")).strip()
        return f"not implemented ({label})" if STUB_LABEL.match(label) else "not implemented" + at
    if kind == "memory":
        return f"stopped: memory limit {limits.memory_text}" + at
    if kind == "setup":
        return f"a handed-out file failed to import ({error_type}): the grader's setup, not your code"
    line = sanitise(record.get("line", ""))
    return clean(f"raised {error_type}" + (f": {line}" if line else "") + at)


def reason_for(excinfo: Any) -> str:
    """The reason for a failed graded test, from pytest's ``ExceptionInfo`` (parent-side code only)."""
    error = excinfo.value
    name = type(error).__name__
    message = str(error).strip().splitlines()[0] if str(error).strip() else ""
    timeout = TIMEOUT_PATTERN.search(message) if name == "Failed" else None
    if timeout:
        return clean(f"timed out after {float(timeout.group(1)):g} s while checking the answers")
    if isinstance(error, AssertionError) or name in ("Failed", "Skipped"):
        return clean(message or "a check failed")
    # An exception in the grader's own comparison code: the answer had a shape or type it did not expect.
    return clean(f"the answer could not be checked ({name}): its type or shape is not the one asked for")
