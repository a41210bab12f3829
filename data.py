"""Exercise 2 Q4: the Market-1501 dataset as a PyTorch ``Dataset``.

Like torchreid's dataset classes, this only parses a folder into (image path, person id, camera) lists;
all image work (resizing, tensors, augmentation) belongs to the transform and the training script.

Market-1501 file names read ``PPPP_cCsS_FFFFFF_BB.jpg``: person id (4 digits; ``0000`` for distractors,
``-1`` for junk), camera ``C``, sequence ``S``, frame ``FFFFFF`` and box ``BB``. Example: ``0002_c1s1_000451_03.jpg``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Callable

from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

SPLIT_FOLDERS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
JUNK_ID, DISTRACTOR_ID = -1, 0
MARKET_NAME = re.compile(r"^(-1|\d{4})_c([1-9])s(\d+)_(\d{6})_(\d{2})$")


def _parse_name(file_path: str | os.PathLike) -> re.Match[str]:
    match = MARKET_NAME.match(Path(file_path).stem)
    if match is None:
        raise ValueError(f"{file_path}: not a Market-1501 file name (expected PPPP_cCsS_FFFFFF_BB.jpg)")
    return match


class Market1501(Dataset):
    """One split of a Market-1501 folder.

    Args:
        root: folder holding ``bounding_box_train/``, ``bounding_box_test/`` and ``query/``.
        split: ``"train"`` (bounding_box_train), ``"query"`` or ``"gallery"`` (bounding_box_test).
        transform: applied to each RGB ``PIL.Image`` (e.g. resize + ``ToTensor``).

    Attributes:
        imgs: sorted image paths (str) of the split, junk (``-1``) left out as in torchreid; distractors
            (``0000``) stay, so that they compete in the gallery ranking.
        ids, cameras: person id and camera of each entry of ``imgs``.
        unique_ids: sorted distinct person ids; ``labels[i] = unique_ids.index(ids[i])``.
        junk: paths of the junk images that were left out (for statistics).

    Raises:
        ValueError: unknown split, a split without images, or an image whose name is not in Market format.
        FileNotFoundError: ``root`` lacks one of the three split folders.
    """

    def __init__(self, root: str | os.PathLike, split: str = "train",
                 transform: Callable[[Image.Image], Any] | None = None):
        # BEGIN SOLUTION
        if split not in SPLIT_FOLDERS:
            raise ValueError(f"split must be one of {', '.join(SPLIT_FOLDERS)}, got {split!r}")
        self.root = Path(root)
        missing = [name for name in SPLIT_FOLDERS.values() if not (self.root / name).is_dir()]
        if missing:
            raise FileNotFoundError(
                f"{self.root}: expected a Market-1501 folder with bounding_box_train/, bounding_box_test/ "
                f"and query/ (missing {', '.join(name + '/' for name in missing)})")
        self.split = split
        self.transform = transform
        folder = self.root / SPLIT_FOLDERS[split]
        # Anything that is not an image (Market-1501 ships Thumbs.db files) is not part of the split.
        paths = sorted(str(path) for path in folder.iterdir()
                       if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file())
        all_ids = [self.get_id(path) for path in paths]
        self.junk = [path for path, pid in zip(paths, all_ids) if pid == JUNK_ID]
        self.imgs = [path for path, pid in zip(paths, all_ids) if pid != JUNK_ID]
        if not self.imgs:
            raise ValueError(f"{folder}: no Market-1501 images found")
        self.ids = [pid for pid in all_ids if pid != JUNK_ID]
        self.cameras = [self.get_camera(path) for path in self.imgs]
        self.unique_ids = sorted(set(self.ids))
        label_of = {pid: label for label, pid in enumerate(self.unique_ids)}
        self.labels = [label_of[pid] for pid in self.ids]
        # END SOLUTION

    @staticmethod
    def get_id(file_path: str | os.PathLike) -> int:
        """Person id from a Market-1501 file name: ``-1`` for junk, ``0`` for distractors."""
        # BEGIN SOLUTION
        return int(_parse_name(file_path).group(1))
        # END SOLUTION

    @staticmethod
    def get_camera(file_path: str | os.PathLike) -> int:
        """Camera number (1-6 in Market-1501) from a Market-1501 file name."""
        # BEGIN SOLUTION
        return int(_parse_name(file_path).group(2))
        # END SOLUTION

    def __len__(self) -> int:
        return len(self.imgs)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        """``(image, label)``: the transformed RGB image and the index of its id in ``unique_ids``."""
        # BEGIN SOLUTION
        path = self.imgs[index]
        try:
            with Image.open(path) as file:
                image = file.convert("RGB")
        except (UnidentifiedImageError, OSError) as error:
            raise ValueError(f"{path}: not a readable image ({type(error).__name__})") from None
        if self.transform is not None:
            image = self.transform(image)
        return image, self.labels[index]
        # END SOLUTION

    def __repr__(self) -> str:
        return (f"Market1501(root={str(self.root)!r}, split={self.split!r}: {len(self.imgs)} images, "
                f"{len(self.unique_ids)} ids, {len(set(self.cameras))} cameras)")
