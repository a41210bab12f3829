"""Fixtures of the public tests: tiny datasets in the real layouts, written in a few milliseconds.

The public tests check interfaces, shapes and that a step runs; they hold no expected value: passing them
means your code has the right shape, not that it is right.
"""

from __future__ import annotations

import os
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("SIAMESE_TP_OFFLINE", "1")  # never download anything in a test


@pytest.fixture(scope="session")
def tiny_mnist(tmp_path_factory) -> Path:
    """``DIR/MNIST/raw`` with 120 training and 40 test digits (torchvision's IDX files)."""
    root = tmp_path_factory.mktemp("mnist")
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, count in (("train", 120), ("t10k", 40)):
        labels = np.arange(count) % 10
        images = rng.integers(0, 255, (count, 28, 28), dtype=np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, count, 28, 28) + images.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, count)
                                                          + labels.astype(np.uint8).tobytes())
    return root


@pytest.fixture(scope="session")
def tiny_market(tmp_path_factory) -> Path:
    """A Market-1501-layout folder: 4 training identities, 3 test identities, junk and distractors."""
    from PIL import Image

    root = tmp_path_factory.mktemp("market")
    rng = np.random.default_rng(0)
    layout = {"bounding_box_train": [(person, camera) for person in (2, 7, 11, 23) for camera in (1, 2, 3, 4)],
              "query": [(40, 1), (41, 2), (42, 3)],
              "bounding_box_test": [(40, 2), (40, 3), (41, 1), (41, 4), (42, 1), (42, 5), (0, 6), (-1, 2)]}
    frame = 0
    for folder, items in layout.items():
        (root / folder).mkdir()
        for person, camera in items:
            frame += 1
            name = f"{'-1' if person == -1 else f'{person:04d}'}_c{camera}s1_{frame:06d}_01.jpg"
            Image.fromarray(rng.integers(0, 255, (64, 32, 3), dtype=np.uint8)).save(root / folder / name)
    return root
