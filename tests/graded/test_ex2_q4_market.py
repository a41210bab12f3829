"""Ex2 Q4: ``Market1501`` on a tiny folder in Market-1501's layout (junk, distractors, a ``Thumbs.db``,
files created in a shuffled order, identities whose ``set`` order is not sorted)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from autograder.questions import MARKET_FOLDERS
from reference import market

from .checks import close

SPLITS = ("train", "query", "gallery")


def expected_split(run, split: str) -> tuple[list[str], list[int]]:
    """Sorted image paths (relative to the root), junk left out, and their person ids."""
    folder = MARKET_FOLDERS[split]
    names = [name for name in run.inputs["written"][split] if not name.startswith("-1")]
    return [f"{folder}/{name}" for name in sorted(names)], [market.parse_name(name)[0] for name in sorted(names)]


def test_get_id(run):
    """get_id(self, file_path): the person id of a Market-1501 file name (-1 for junk, 0 for distractors)"""
    got = run.probe("ex2_q4_get_id")
    names = run.inputs["names"]
    expected = [market.parse_name(name)[0] for name in names]
    assert isinstance(got, list) and len(got) == len(expected), "get_id did not return one id per file"
    for name, value, truth in zip(names, got, expected):
        assert value == truth, f"get_id(.../{name.split('/')[-1]}) = {value}, expected {truth}"


def test_imgs_sorted_without_junk(run):
    """imgs: the split's image paths, sorted, junk (-1) left out, distractors (0000) kept, other files ignored"""
    for split in SPLITS:
        value = run.probe(f"ex2_q4_structure_{split}")
        paths, _ = expected_split(run, split)
        assert value["len"] == len(paths), f"len(Market1501(root, {split!r})) = {value['len']}, expected {len(paths)}"
        got = [path.replace("\\", "/") for path in value["imgs"]]
        assert sorted(got) == paths, (f"{split}: imgs holds {len(got)} paths; expected the {len(paths)} images of "
                                      f"{MARKET_FOLDERS[split]}/ without junk (-1) and without non-image files")
        assert got == paths, f"{split}: imgs is not sorted"


def test_unique_ids_sorted(run):
    """unique_ids: the split's distinct person ids, sorted"""
    for split in SPLITS:
        value = run.probe(f"ex2_q4_structure_{split}")
        _, ids = expected_split(run, split)
        expected = sorted(set(ids))
        if split == "train":
            assert value["unique_ids"] == expected, \
                f"train: unique_ids = {value['unique_ids']}, expected the sorted distinct ids {expected}"
        else:
            assert value["unique_ids"] == sorted(value["unique_ids"]) and set(ids) <= set(value["unique_ids"]), \
                f"{split}: unique_ids must be sorted and hold every id of the split"


def test_getitem_gives_image_and_label(run):
    """dataset[i] = (transform(RGB image of imgs[i]), label) with unique_ids[label] = the id of imgs[i]"""
    root = run.private / "market"
    for split in SPLITS:
        structure, items = run.probe(f"ex2_q4_structure_{split}"), run.probe(f"ex2_q4_items_{split}")
        paths, ids = expected_split(run, split)
        labels = items["labels"]
        assert len(labels) == len(paths), f"{split}: {len(labels)} items read, expected {len(paths)}"
        for index, (label, person) in enumerate(zip(labels, ids)):
            assert 0 <= label < len(structure["unique_ids"]) and structure["unique_ids"][label] == person, \
                f"{split}[{index}]: label {label} does not index the id {person} of imgs[{index}] in unique_ids"
        if split == "train":
            assert sorted(set(labels)) == list(range(len(set(ids)))), "train labels must be 0..C-1"
        expected = []
        for path in paths:
            with Image.open(root / path) as file:
                rgb = np.asarray(file.convert("RGB"), dtype=np.float64)
            expected.append([1.0, rgb.shape[1], rgb.shape[0], *rgb.reshape(-1, 3).mean(0)])
        close(items["images"], np.array(expected), f"{split}: the images given to the transform (RGB, pixel means)",
              atol=1e-6)
