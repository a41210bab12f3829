"""Fashion-MNIST readers: the CSV files the cross-entropy vs contrastive lab ships, and torchvision's raw folder.

Fashion-MNIST (Zalando, 60,000 training / 10,000 test 28x28 grey images of 10 clothing classes) cannot be
downloaded here, so nothing falls back silently: a reader either finds the real files or stops with one line
naming what it looked for. Both return ``utils.mnist.MnistData`` (images ``(N, 1, 28, 28)`` float in [0, 1],
labels int64) with a ``source`` that says "Fashion-MNIST"; the class names are :data:`FASHION_CLASSES`.

- CSV (Kaggle's ``fashion-mnist_train.csv`` / ``fashion-mnist_test.csv``): a header line, then one row per
  image, ``label, pixel1, ..., pixel784`` with pixels in 0..255;
- torchvision's layout (``FashionMNIST(root, download=True)`` elsewhere, then copied): the unpacked IDX files
  ``ROOT/FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``, the same format as MNIST's.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from utils.mnist import MNIST_FILES, MnistData, load_full_mnist

FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")
PIXELS = 28 * 28


def read_fashion_csv(path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Read one Fashion-MNIST CSV: images (N, 1, 28, 28) float32 in [0, 1] and labels (N,) int64 in 0..9.

    Raises a one-line ``FileNotFoundError`` / ``ValueError`` naming the file for a missing file, a table of
    another shape, non-numeric cells, or values out of range.
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: Fashion-MNIST CSV not found")
    try:
        values = pd.read_csv(path).to_numpy()
    except (OSError, ValueError, UnicodeDecodeError) as error:  # pandas' parser errors are ValueErrors
        raise ValueError(f"{path}: not a readable CSV ({type(error).__name__})") from None
    if values.ndim != 2 or values.shape[1] != 1 + PIXELS or len(values) == 0:
        raise ValueError(f"{path}: expected a header then rows of label + {PIXELS} pixels, got a table of shape "
                         f"{values.shape}")
    if not np.issubdtype(values.dtype, np.number) or np.isnan(values).any():
        raise ValueError(f"{path}: expected only numbers (label, pixels 0..255), found empty or text cells")
    labels, pixels = values[:, 0], values[:, 1:]
    if labels.min() < 0 or labels.max() >= len(FASHION_CLASSES) or (labels != labels.round()).any():
        raise ValueError(f"{path}: labels must be integers 0..{len(FASHION_CLASSES) - 1}")
    if pixels.min() < 0 or pixels.max() > 255:
        raise ValueError(f"{path}: pixel values must lie in 0..255")
    images = torch.from_numpy(pixels.astype(np.float32) / 255.0).view(-1, 1, 28, 28)
    return images, torch.from_numpy(labels.astype(np.int64))


def load_fashion_csv(train_csv: str | Path, test_csv: str | Path | None = None) -> MnistData:
    """Fashion-MNIST from its CSV files; ``test_csv`` defaults to the ``_test`` twin of ``train_csv``'s name,
    which must exist (the lab's two files)."""
    train_csv = Path(train_csv)
    if test_csv is None:
        if "train" not in train_csv.name:
            raise ValueError(f"{train_csv}: cannot guess the test CSV (no 'train' in the name): give --test-csv")
        test_csv = train_csv.with_name(train_csv.name.replace("train", "test"))
    train_images, train_labels = read_fashion_csv(train_csv)
    test_images, test_labels = read_fashion_csv(test_csv)
    return MnistData(train_images, train_labels, test_images, test_labels,
                     f"Fashion-MNIST CSV {train_csv} / {test_csv}")


def load_fashion_mnist(root: str | Path) -> MnistData:
    """Fashion-MNIST from torchvision's layout, ``root/FashionMNIST/raw/`` (or the files in ``root/FashionMNIST/``).

    Only a ``FashionMNIST`` folder is read, so that MNIST's ``root/MNIST/raw/`` beside it is never taken for
    Fashion-MNIST. A missing folder or file: one-line ``FileNotFoundError`` naming what was expected.
    """
    root = Path(root)
    folder = next((candidate for candidate in (root / "FashionMNIST" / "raw", root / "FashionMNIST")
                   if all((candidate / name).is_file() for name in MNIST_FILES.values())), None)
    if folder is None:
        raise FileNotFoundError(f"{root}: no Fashion-MNIST found; expected {root}/FashionMNIST/raw/ with "
                                f"{', '.join(MNIST_FILES.values())}")
    data = load_full_mnist(folder)
    for split, labels in (("train", data.train_labels), ("test", data.test_labels)):
        if labels.max() >= len(FASHION_CLASSES):
            raise ValueError(f"{folder}: {split} labels must lie in 0..{len(FASHION_CLASSES) - 1}")
    return dataclasses.replace(data, source=f"Fashion-MNIST from {folder}")
