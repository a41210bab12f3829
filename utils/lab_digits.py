"""The digits of the DenseNet / ResNeXt / FaceNet lab: its PNG folders, its 2,000 / 1,000 subset, or MNIST.

The lab ships MNIST as image files::

    mnist/train/<class>/<id>.png    mnist/train.csv
    mnist/test/<class>/<id>.png     mnist/test.csv

``--lab-root mnist`` reads that layout. Each CSV (beside the folders, or inside ``train/`` / ``test/``) has a
header naming an image column (``path``, ``file``, ``filename``, ``image``, ``id``...) and a label column
(``label``, ``class``, ``digit``...); an image entry is a path relative to the CSV, to the split folder or to
its class folder, with or without ``.png``. Without a CSV every ``<class>/*.png`` of the split is read.
Without ``--lab-root`` the digits are MNIST as every Exercise 1 script loads it (``--data-root``).

``--lab-subset`` keeps the lab's sizes, 2,000 training and 1,000 test digits, drawn stratified with a fixed
seed (the same digits for every run, whatever ``--seed``), so that runs compare on the same images.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import torch

from utils.mnist import MnistData, mnist_from_args, stratified_subset

LAB_SUBSET_SIZES = (2000, 1000)
SUBSET_SEED = 0
IMAGE_COLUMNS = ("path", "file", "filename", "file_name", "image", "img", "image_path", "name", "id")
LABEL_COLUMNS = ("label", "class", "digit", "target", "y")


def read_digit_png(path: Path) -> np.ndarray:
    """One 28 x 28 grey digit as uint8 ``(28, 28)``; an unreadable or wrongly sized file raises a ValueError."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("L"))
    except (OSError, UnidentifiedImageError) as error:
        raise ValueError(f"{path}: not a readable image ({type(error).__name__})") from None
    if pixels.shape != (28, 28):
        raise ValueError(f"{path}: expected a 28 x 28 digit, got {pixels.shape[1]} x {pixels.shape[0]}")
    return pixels


def column_index(header: list[str], names: tuple[str, ...], csv_path: Path, what: str) -> int:
    lowered = [name.strip().lower() for name in header]
    for name in names:
        if name in lowered:
            return lowered.index(name)
    raise ValueError(f"{csv_path}:1: expected a header naming the {what} column (one of {', '.join(names)}), "
                     f"got {','.join(header)}")


def resolve_image(entry: str, label: int, csv_path: Path, split_folder: Path) -> Path | None:
    """The file an image column's entry names: relative to the CSV, the split folder or its class folder."""
    names = [entry] if Path(entry).suffix else [entry, f"{entry}.png"]
    for folder in (csv_path.parent, split_folder, split_folder / str(label)):
        for name in names:
            if (folder / name).is_file():
                return folder / name
    return None


def read_lab_csv(csv_path: Path, split_folder: Path) -> list[tuple[Path, int]]:
    """``(image path, label)`` for every row of a lab CSV; a bad row raises a ValueError naming its line."""
    with csv_path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        raise ValueError(f"{csv_path}: empty file (expected a header, then one row per image)")
    image_column = column_index(rows[0], IMAGE_COLUMNS, csv_path, "image")
    label_column = column_index(rows[0], LABEL_COLUMNS, csv_path, "label")
    items = []
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) <= max(image_column, label_column):
            raise ValueError(f"{csv_path}:{line}: expected {len(rows[0])} columns, got {len(row)}")
        text = row[label_column].strip()
        if not (text.isdigit() and int(text) <= 9):
            raise ValueError(f"{csv_path}:{line}: label {text!r} is not a digit 0-9")
        label = int(text)
        path = resolve_image(row[image_column].strip(), label, csv_path, split_folder)
        if path is None:
            raise ValueError(f"{csv_path}:{line}: no image {row[image_column].strip()!r} beside the CSV, in "
                             f"{split_folder} or in {split_folder / str(label)}")
        if path.parent.name.isdigit() and path.parent != split_folder and int(path.parent.name) != label:
            raise ValueError(f"{csv_path}:{line}: label {label} but the image is in class folder {path.parent}")
        items.append((path, label))
    return items


def read_lab_split(root: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One split of the lab's layout: images float ``(N, 1, 28, 28)`` in [0, 1] and labels int64 ``(N,)``."""
    folder = root / split
    csv_path = next((path for path in (root / f"{split}.csv", folder / f"{split}.csv") if path.is_file()), None)
    if csv_path is not None:
        items = read_lab_csv(csv_path, folder)
    elif folder.is_dir():
        items = [(path, int(path.parent.name)) for path in sorted(folder.glob("*/*.png"))
                 if path.parent.name.isdigit() and int(path.parent.name) <= 9]
    else:
        raise ValueError(f"--lab-root {root}: no {split}/ folder and no {split}.csv (expected the lab's layout "
                         f"{split}/<class>/<id>.png)")
    if not items:
        raise ValueError(f"--lab-root {root}: no {split} image found (expected {split}/<class 0-9>/<id>.png)")
    pixels = np.stack([read_digit_png(path) for path, _ in items])
    images = torch.from_numpy(pixels).unsqueeze(1).float().div_(255.0)
    return images, torch.tensor([label for _, label in items], dtype=torch.long)


def read_lab_digits(root: str | Path) -> MnistData:
    """The lab's ``train/`` and ``test/`` PNG folders (with their CSVs when present) as one ``MnistData``."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"--lab-root {root}: no such folder")
    train_images, train_labels = read_lab_split(root, "train")
    test_images, test_labels = read_lab_split(root, "test")
    return MnistData(train_images, train_labels, test_images, test_labels,
                     source=f"the lab's PNG digits from {root} ({len(train_labels):,} train / "
                            f"{len(test_labels):,} test)")


def lab_subset(data: MnistData, sizes: tuple[int, int] = LAB_SUBSET_SIZES) -> MnistData:
    """A class-stratified ``sizes`` = (train, test) subset, always the same digits (fixed seed)."""
    kept = []
    for labels, size in ((data.train_labels, sizes[0]), (data.test_labels, sizes[1])):
        kept.append(torch.as_tensor(stratified_subset(labels.cpu().numpy(), size, SUBSET_SEED), device=labels.device)
                    if size < len(labels) else torch.arange(len(labels), device=labels.device))
    train, test = kept
    return MnistData(data.train_images[train], data.train_labels[train], data.test_images[test],
                     data.test_labels[test], source=f"{data.source}; lab subset {len(train):,} train / "
                                                    f"{len(test):,} test (stratified, seed {SUBSET_SEED})")


def add_lab_data_arguments(parser: argparse.ArgumentParser) -> None:
    """``--lab-root`` and ``--lab-subset`` (with ``utils.mnist``'s ``--data-root`` / ``--download``)."""
    from utils.mnist import add_mnist_arguments

    add_mnist_arguments(parser)
    group = parser.add_argument_group("the lab's digits")
    group.add_argument("--lab-root", default=None,
                       help="the lab's PNG layout DIR/{train,test}/<class>/<id>.png (+ train.csv, test.csv); "
                            "default: MNIST from --data-root")
    group.add_argument("--lab-subset", action="store_true",
                       help="keep the lab's 2,000 training and 1,000 test digits (stratified, fixed seed)")


def load_lab_digits(args: argparse.Namespace, device: torch.device | str = "cpu") -> MnistData:
    """The digits the flags name, on ``device``; bad data ends the script with one line naming the file."""
    if args.lab_root is None:
        data = mnist_from_args(args)
    else:
        try:
            data = read_lab_digits(args.lab_root)
        except ValueError as error:
            raise SystemExit(f"error: {error}") from None
        print(f"Data: {data.source}")
    if args.lab_subset:
        data = lab_subset(data)
        print(f"Data: {data.source}")
    return data.to(device)


def prepare_lab_run(args: argparse.Namespace) -> tuple[torch.device, MnistData]:
    """The start of the lab's training scripts: seed, pick the device, load the digits onto it."""
    from utils.training import resolve_device, seed_everything

    seed_everything(args.seed)
    device = resolve_device(args.device)
    return device, load_lab_digits(args, device)
