"""Reference for Ex2 Q4: Market-1501 file names, and tiny Market-layout folders for the tests.

A Market-1501 name is ``PPPP_cCsS_FFFFFF_BB.jpg``: person id (``-1`` junk, ``0000`` distractor),
camera C (1-6), sequence S, frame, bounding box.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

NAME = re.compile(r"^(-1|\d{4})_c(\d)s(\d)_(\d{6})_(\d{2})\.jpg$")
SPLIT_FOLDERS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}


def parse_name(file_name: str) -> tuple[int, int]:
    """``(person_id, camera)`` of a Market-1501 file name or path."""
    match = NAME.match(Path(file_name).name)
    if match is None:
        raise ValueError(f"not a Market-1501 name: {file_name}")
    return int(match.group(1)), int(match.group(2))


# Names used by the tests, as the real dataset writes them (junk, distractors, all six cameras).
REAL_NAMES = [
    "0002_c1s1_000451_03.jpg",
    "0002_c2s1_000301_01.jpg",
    "-1_c1s1_000000_00.jpg",
    "-1_c3s2_012345_01.jpg",
    "0000_c6s3_087327_02.jpg",
    "0000_c1s1_000001_00.jpg",
    "1501_c6s4_001877_03.jpg",
    "0431_c5s1_105373_04.jpg",
    "0007_c4s6_020208_01.jpg",
    "0100_c3s1_012345_06.jpg",
]


def market_file_name(person: int, camera: int, frame: int, box: int = 1, sequence: int = 1) -> str:
    person_text = "-1" if person == -1 else f"{person:04d}"
    return f"{person_text}_c{camera}s{sequence}_{frame:06d}_{box:02d}.jpg"


def _colour(person: int, camera: int, rng: np.random.Generator) -> np.ndarray:
    """A person's colour (stable across cameras) under a camera-dependent brightness, plus noise."""
    base = np.random.default_rng(abs(person) * 7 + 3).integers(30, 226, 3)
    return np.clip(base * (0.85 + 0.05 * camera) + rng.normal(0, 6, 3), 0, 255)


def write_market_folder(root: Path, layout: dict[str, list[tuple[int, int]]], size: tuple[int, int] = (64, 32),
                        seed: int = 0) -> dict[str, list[str]]:
    """Write tiny Market-1501-style JPEGs: ``layout[split]`` lists ``(person, camera)`` per image.

    Each image is a person-coloured body on a camera-coloured background, so identities are learnable.
    Returns the file names written per split (sorted). Also writes a non-image file in each folder.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    written: dict[str, list[str]] = {}
    frame = 0
    height, width = size
    for split, items in layout.items():
        folder = root / SPLIT_FOLDERS[split]
        folder.mkdir(parents=True, exist_ok=True)
        names = []
        for person, camera in items:
            frame += 1
            name = market_file_name(person, camera, frame, box=1 + frame % 3, sequence=1 + frame % 6)
            pixels = np.empty((height, width, 3))
            pixels[:] = 40 * camera % 255
            pixels[height // 8: -height // 8, width // 4: -width // 4] = _colour(person, camera, rng)
            pixels += rng.normal(0, 4, pixels.shape)
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / name, quality=95)
            names.append(name)
        (folder / "Thumbs.db").write_bytes(b"not an image")
        written[split] = sorted(names)
    return written


def tiny_layout(train_ids: int = 4, train_per_id: int = 4, test_ids: int = 3) -> dict[str, list[tuple[int, int]]]:
    """Disjoint train/test identities; each test identity has a query and gallery images from other
    cameras (and one from its own camera), plus two distractors (0) and two junk images (-1)."""
    train = [(10 + i, 1 + j % 6) for i in range(train_ids) for j in range(train_per_id)]
    query, gallery = [], []
    for i in range(test_ids):
        person = 50 + i
        query.append((person, 1))
        gallery += [(person, 2), (person, 3), (person, 1)]
    gallery += [(0, 4), (0, 5), (-1, 1), (-1, 2)]
    query.append((-1, 3))
    return {"train": train, "query": query, "gallery": gallery}


class ReferenceMarket1501:
    """A minimal ``Market1501`` (same constructor and attributes), swapped in where another question's
    code reads the dataset, so that question is graded on its own."""

    def __init__(self, root, split: str = "train", transform=None):
        folder = Path(root) / SPLIT_FOLDERS[split]
        paths = sorted(str(path) for path in folder.iterdir() if path.suffix.lower() == ".jpg")
        self.imgs = [path for path in paths if parse_name(path)[0] != -1]
        self.ids = [parse_name(path)[0] for path in self.imgs]
        self.cameras = [parse_name(path)[1] for path in self.imgs]
        self.unique_ids = sorted(set(self.ids))
        self.labels = [self.unique_ids.index(pid) for pid in self.ids]
        self.transform = transform

    @staticmethod
    def get_id(file_path) -> int:
        return parse_name(str(file_path))[0]

    @staticmethod
    def get_camera(file_path) -> int:
        return parse_name(str(file_path))[1]

    def __len__(self) -> int:
        return len(self.imgs)

    def __getitem__(self, index: int):
        from PIL import Image

        with Image.open(self.imgs[index]) as file:
            image = file.convert("RGB")
        return (self.transform(image) if self.transform else image), self.labels[index]
