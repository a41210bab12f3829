"""Exercise 2 Q4: the Market-1501 dataset as a PyTorch ``Dataset``, and the loaders built on it.

Like torchreid's dataset classes, ``Market1501`` only parses a folder into image paths and person ids;
all image work (resizing, tensors, augmentation) belongs to the transform (``utils/reid_transforms.py``),
and batching to a ``torch.utils.data.DataLoader``, which reads images in worker processes.

Market-1501 file names read ``PPPP_cCsS_FFFFFF_BB.jpg``: person id (4 digits; ``0000`` for distractors,
``-1`` for junk), camera ``C``, sequence ``S``, frame ``FFFFFF`` and box ``BB``. Example: ``0002_c1s1_000451_03.jpg``.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset

SPLIT_FOLDERS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
JUNK_ID, DISTRACTOR_ID = -1, 0
MARKET_NAME = re.compile(r"^(-1|\d{4})_c([1-9])s(\d+)_(\d{6})_(\d{2})$")
DRY_RUN_QUERIES, DRY_RUN_OTHER_GALLERY = 16, 32


class UnreadableImageError(ValueError):
    """An image file that PIL cannot decode (the message names the file, on one line)."""


# --------------------------------------------------------------------------- given helpers: names, files, images
def parse_market_name(file_path: str | os.PathLike) -> tuple[int, int]:
    """``(person id, camera)`` from a Market-1501 file name or path; a one-line ``ValueError`` otherwise."""
    match = MARKET_NAME.match(Path(file_path).stem)
    if match is None:
        raise ValueError(f"{file_path}: not a Market-1501 file name (expected PPPP_cCsS_FFFFFF_BB.jpg)")
    return int(match.group(1)), int(match.group(2))


def camera_of(file_path: str | os.PathLike) -> int:
    """Camera number (1-6 in Market-1501) of a Market-1501 image."""
    return parse_market_name(file_path)[1]


def check_market_folder(root: str | os.PathLike) -> None:
    """One-line ``FileNotFoundError`` unless ``root`` holds the three Market-1501 split folders."""
    missing = [name + "/" for name in SPLIT_FOLDERS.values() if not (Path(root) / name).is_dir()]
    if missing:
        raise FileNotFoundError(f"{root}: expected a Market-1501 folder with bounding_box_train/, "
                                f"bounding_box_test/ and query/ (missing {', '.join(missing)})")


def list_images(folder: str | os.PathLike) -> list[str]:
    """Sorted paths (str) of the image files in ``folder`` (Market-1501 also ships ``Thumbs.db`` files)."""
    return sorted(str(path) for path in Path(folder).iterdir()
                  if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file())


def read_image(path: str | os.PathLike) -> Image.Image:
    """The RGB image at ``path``; :class:`UnreadableImageError` naming the file when it cannot be decoded."""
    try:
        with Image.open(path) as file:
            return file.convert("RGB")
    except (UnidentifiedImageError, OSError) as error:
        raise UnreadableImageError(f"{path}: not a readable image ({type(error).__name__})") from None


# --------------------------------------------------------------------------- the dataset (Q4)
class Market1501(Dataset):
    """One split of a Market-1501 folder.

    Args:
        root: folder holding ``bounding_box_train/``, ``bounding_box_test/`` and ``query/``.
        split: ``"train"`` (bounding_box_train), ``"query"`` or ``"gallery"`` (bounding_box_test).
        transform: applied to each RGB ``PIL.Image`` (e.g. ``utils.reid_transforms.evaluation_transform``).

    Attributes:
        imgs: sorted image paths (str) of the split; junk (``-1``) is left out, as in torchreid; distractors
            (``0000``) stay, so that they compete in the gallery ranking.
        ids, cameras: person id and camera of each entry of ``imgs``.
        unique_ids: sorted distinct person ids that labels index. For ``"train"``: the training ids, so labels
            are 0..C-1, the classes of the identity loss. For ``"query"`` and ``"gallery"``: the ids of both
            test splits together, so one person has the same label in the query and in the gallery.
        labels: ``labels[i] = unique_ids.index(ids[i])``.

    ``dataset[i]`` is ``(transform(image), labels[i])``.

    Raises:
        ValueError: unknown split, a split without images, or an image whose name is not in Market format.
        FileNotFoundError: ``root`` lacks one of the three split folders.
    """

    def __init__(self, root: str | os.PathLike, split: str = "train",
                 transform: Callable[[Image.Image], Any] | None = None):
        # BEGIN SOLUTION
        if split not in SPLIT_FOLDERS:
            raise ValueError(f"split: expected one of {', '.join(SPLIT_FOLDERS)}, got {split!r}")
        check_market_folder(root)
        self.root, self.split, self.transform = Path(root), split, transform
        # Junk images are false detections (background, body parts): not part of the protocol.
        self.imgs = [path for path in list_images(self.root / SPLIT_FOLDERS[split]) if self.get_id(path) != JUNK_ID]
        if not self.imgs:
            raise ValueError(f"{self.root / SPLIT_FOLDERS[split]}: no Market-1501 images found")
        self.ids = [self.get_id(path) for path in self.imgs]
        self.cameras = [camera_of(path) for path in self.imgs]
        # Query and gallery hold the same (test) people: one id -> label map for both.
        labelled_splits = ["train"] if split == "train" else ["query", "gallery"]
        self.unique_ids = sorted({self.get_id(path) for name in labelled_splits
                                  for path in list_images(self.root / SPLIT_FOLDERS[name])} - {JUNK_ID})
        label_of = {pid: label for label, pid in enumerate(self.unique_ids)}
        self.labels = [label_of[pid] for pid in self.ids]
        # END SOLUTION

    def get_id(self, file_path: str | os.PathLike) -> int:
        """Person id from a Market-1501 file name: ``-1`` for junk, ``0`` for distractors."""
        # BEGIN SOLUTION
        # "0002_c1s1_000451_03.jpg" -> 2; junk files start with "-1", distractors with "0000".
        try:
            return int(Path(file_path).name.split("_")[0])
        except ValueError:
            raise ValueError(f"{file_path}: not a Market-1501 file name (expected PPPP_cCsS_FFFFFF_BB.jpg)") from None
        # END SOLUTION

    def __len__(self) -> int:
        # BEGIN SOLUTION
        return len(self.imgs)
        # END SOLUTION

    def __getitem__(self, index: int) -> tuple[Any, int]:
        """``(image, label)``: the transformed RGB image and the index of its id in ``unique_ids``."""
        # BEGIN SOLUTION
        image = read_image(self.imgs[index])
        if self.transform is not None:
            image = self.transform(image)
        return image, self.labels[index]
        # END SOLUTION


# --------------------------------------------------------------------------- given helpers: loaders, evaluation sets
def ids_and_cameras(dataset: Any) -> tuple[np.ndarray, np.ndarray]:
    """Person ids and cameras (int64 arrays) of ``dataset.imgs``, read from the file names."""
    ids = np.array([dataset.get_id(path) for path in dataset.imgs], dtype=np.int64)
    return ids, np.array([camera_of(path) for path in dataset.imgs], dtype=np.int64)


class SplitSubset(Dataset):
    """Some images of a split (``indices``), with the interface ``evaluate`` reads: ``imgs`` and ``get_id``."""

    def __init__(self, dataset: Any, indices: Sequence[int]):
        self.dataset, self.indices = dataset, [int(i) for i in indices]
        self.imgs = [dataset.imgs[i] for i in self.indices]

    def get_id(self, file_path: str | os.PathLike) -> int:
        return self.dataset.get_id(file_path)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Any:
        return self.dataset[self.indices[index]]


def dry_run_subsets(query: Any, gallery: Any) -> tuple[SplitSubset, SplitSubset]:
    """The first queries and a gallery of their people plus a few others: a tiny but valid evaluation."""
    query_ids, _ = ids_and_cameras(query)
    gallery_ids, _ = ids_and_cameras(gallery)
    chosen = np.arange(min(DRY_RUN_QUERIES, len(query_ids)))
    related = np.isin(gallery_ids, query_ids[chosen])
    others = np.flatnonzero(~related)[:DRY_RUN_OTHER_GALLERY]
    return SplitSubset(query, chosen), SplitSubset(gallery, np.sort(np.concatenate([np.flatnonzero(related), others])))


def check_evaluation_sets(query: Any, gallery: Any) -> None:
    """One-line ``ValueError`` unless some query has a true match: its person seen by another camera."""
    query_ids, query_cameras = ids_and_cameras(query)
    gallery_ids, gallery_cameras = ids_and_cameras(gallery)
    cameras_of = defaultdict(set)
    for pid, camera in zip(gallery_ids.tolist(), gallery_cameras.tolist()):
        cameras_of[pid].add(camera)
    if not any(cameras_of[pid] - {camera} for pid, camera in zip(query_ids.tolist(), query_cameras.tolist())):
        folders = f"{Path(query.imgs[0]).parent} and {Path(gallery.imgs[0]).parent}"
        raise ValueError(f"{folders}: no query person appears in the gallery under another camera, "
                         "so CMC and mAP are undefined")


def evaluation_loader(dataset: Any, batch_size: int, workers: int, pin_memory: bool = False) -> DataLoader:
    """Images of ``dataset`` in order (``evaluate`` pairs features with ``dataset.imgs`` by position)."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers, pin_memory=pin_memory)
