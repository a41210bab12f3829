"""Ex2 Q4: ``Market1501``, on a tiny folder in Market-1501's layout written by the test."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest

from reference import market

pytestmark = pytest.mark.timeout(20, method="signal")
FILE = "data.py"


@pytest.fixture(scope="module")
def tiny_market(tmp_path_factory):
    root = tmp_path_factory.mktemp("market")
    return root, market.write_market_folder(root, market.tiny_layout())


def open_split(submission, root: Path, split: str, transform=None):
    return submission.get(FILE, "Market1501")(root, split=split, transform=transform)


def expected_split(names: list[str]) -> list[str]:
    return sorted(name for name in names if market.parse_name(name)[0] != -1)


def test_get_id_and_get_camera(submission, tiny_market):
    """get_id/get_camera read the person id (-1 junk, 0 distractor) and camera from Market-1501 names and paths."""
    Market1501 = submission.get(FILE, "Market1501")
    static = all(isinstance(inspect.getattr_static(Market1501, name, None), staticmethod)
                 for name in ("get_id", "get_camera"))
    # Static methods are called on the class, so this test does not depend on the constructor.
    dataset = Market1501 if static else open_split(submission, tiny_market[0], "gallery")
    for name in market.REAL_NAMES:
        for path in (name, f"/data/Market-1501-v15.09.15/bounding_box_test/{name}"):
            expected_id, expected_camera = market.parse_name(name)
            assert dataset.get_id(path) == expected_id, f"get_id({path!r}) = {dataset.get_id(path)!r}, " \
                                                        f"expected {expected_id}"
            assert dataset.get_camera(path) == expected_camera, \
                f"get_camera({path!r}) = {dataset.get_camera(path)!r}, expected {expected_camera}"


def test_imgs_sorted_without_junk(submission, tiny_market):
    """imgs lists the split's images, sorted, junk (-1) left out, distractors (0000) kept, non-images ignored."""
    root, written = tiny_market
    for split in ("train", "query", "gallery"):
        imgs = list(open_split(submission, root, split).imgs)
        names = [Path(path).name for path in imgs]
        assert names == expected_split(written[split]), \
            f"Market1501(split={split!r}).imgs names {names[:6]}..., expected {expected_split(written[split])[:6]}..."
        assert [str(path) for path in imgs] == sorted(str(path) for path in imgs), f"{split}: imgs is not sorted"
        assert all(Path(path).is_file() for path in imgs), f"{split}: imgs holds paths that are not files"


def test_unique_ids_ids_cameras_aligned(submission, tiny_market):
    """unique_ids is the sorted list of person ids; ids and cameras follow imgs entry by entry."""
    root, _ = tiny_market
    for split in ("train", "query", "gallery"):
        dataset = open_split(submission, root, split)
        expected = [market.parse_name(path) for path in dataset.imgs]
        ids, cameras = [int(i) for i in dataset.ids], [int(c) for c in dataset.cameras]
        assert ids == [pid for pid, _ in expected], f"{split}: ids do not match the person ids of imgs"
        assert cameras == [camera for _, camera in expected], f"{split}: cameras do not match the cameras of imgs"
        unique = [int(i) for i in dataset.unique_ids]
        assert unique == sorted({pid for pid, _ in expected}), \
            f"{split}: unique_ids = {unique}, expected {sorted({pid for pid, _ in expected})}"


def test_getitem_returns_image_and_label_index(submission, tiny_market):
    """dataset[i] = (transform(RGB image of imgs[i]), index of its id in unique_ids); len = len(imgs)."""
    from PIL import Image

    root, _ = tiny_market
    for split in ("train", "gallery"):
        dataset = open_split(submission, root, split, transform=lambda image: np.asarray(image.convert("RGB")))
        assert len(dataset) == len(dataset.imgs), f"{split}: len(dataset) = {len(dataset)}, imgs has {len(dataset.imgs)}"
        for index in range(len(dataset)):
            image, label = dataset[index]
            pid = market.parse_name(dataset.imgs[index])[0]
            expected_label = sorted({market.parse_name(path)[0] for path in dataset.imgs}).index(pid)
            assert int(label) == expected_label, \
                f"{split}[{index}]: label {label}, expected {expected_label} (index of id {pid} in unique_ids)"
            with Image.open(dataset.imgs[index]) as file:
                pixels = np.asarray(file.convert("RGB"))
            assert np.shape(image) == pixels.shape and np.array_equal(image, pixels), \
                f"{split}[{index}]: the image is not the transformed RGB image of imgs[{index}]"
