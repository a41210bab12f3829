"""Reference for Ex2 Q4: the person id and camera of a Market-1501 file name.

A Market-1501 name is ``PPPP_cCsS_FFFFFF_BB.jpg``: person id (``-1`` junk, ``0000`` distractor),
camera C (1-6), sequence S, frame, bounding box.
"""

from __future__ import annotations

import re
from pathlib import Path


NAME = re.compile(r"^(-1|\d{4})_c(\d)s(\d)_(\d{6})_(\d{2})\.jpg$")
SPLIT_FOLDERS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}


def parse_name(file_name: str) -> tuple[int, int]:
    """``(person_id, camera)`` of a Market-1501 file name or path."""
    match = NAME.match(Path(file_name).name)
    if match is None:
        raise ValueError(f"not a Market-1501 name: {file_name}")
    return int(match.group(1)), int(match.group(2))
