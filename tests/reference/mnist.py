"""A tiny MNIST in torchvision's raw layout (``<root>/MNIST/raw/*-idx?-ubyte``), for quick dry runs.

Digit-like blobs (one position per class, plus noise): nothing to learn from, but every Exercise 1
script reads them through ``--data-root`` exactly as it reads the real files, without loading the
embedded 5,000-image sample and its dependencies.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def _images_and_labels(count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    labels = np.arange(count) % 10
    rng.shuffle(labels)
    images = rng.integers(0, 60, (count, 28, 28)).astype(np.uint8)
    for image, label in zip(images, labels):
        row, column = 4 + 2 * (label // 5) * 5, 4 + 4 * (label % 5)
        image[row: row + 10, column: column + 6] = 220
    return images, labels.astype(np.uint8)


def write_tiny_mnist(root: Path, train: int = 128, test: int = 100, seed: int = 0) -> Path:
    """Write ``train``/``test`` images and labels in IDX format under ``root/MNIST/raw``; returns ``root``."""
    raw = Path(root) / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, count in (("train", train), ("test", test)):
        images, labels = _images_and_labels(count, rng)
        image_file, label_file = FILES[split]
        (raw / image_file).write_bytes(struct.pack(">IIII", 0x803, count, 28, 28) + images.tobytes())
        (raw / label_file).write_bytes(struct.pack(">II", 0x801, count) + labels.tobytes())
    return Path(root)
