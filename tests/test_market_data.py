"""The synthetic Market-1501 generator (layout, protocol guarantees, determinism), the Market1501 dataset, its
transforms and the evaluation sets built on it."""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from data import (
    Market1501,
    UnreadableImageError,
    camera_of,
    check_evaluation_sets,
    dry_run_subsets,
    ids_and_cameras,
)
from utils import synthetic_market
from utils.reid_transforms import evaluation_transform, train_transform
from utils.synthetic_market import dataset_name, generate_market

FOLDERS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
# Written here from the Market-1501 description, independently of data.py's parser.
NAME = re.compile(r"^(?P<pid>-1|[0-9]{4})_c(?P<cam>[1-6])s(?P<seq>[1-6])_(?P<frame>[0-9]{6})_(?P<box>[0-9]{2})\.jpg$")


def parse(name: str) -> tuple[int, int]:
    match = NAME.match(name)
    assert match is not None, f"{name} is not a Market-1501 file name"
    return int(match["pid"]), int(match["cam"])


def listing(root: Path) -> dict[str, list[str]]:
    return {split: sorted(p.name for p in (root / folder).iterdir() if p.suffix == ".jpg")
            for split, folder in FOLDERS.items()}


@pytest.fixture(scope="module")
def market(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic") / "market"
    generate_market(root, ids=6, images_per_id=6, seed=3)
    return root


# --------------------------------------------------------------------------- generator
def test_generator_writes_market_layout(market):
    names = listing(market)
    for split, files in names.items():
        assert files, f"{split} is empty"
        for name in files:
            parse(name)
    for name in names["query"][:3] + names["gallery"][:3]:
        with Image.open(market / FOLDERS["gallery" if name in names["gallery"] else "query"] / name) as image:
            assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (64, 128))
    train_ids = {parse(n)[0] for n in names["train"]}
    query_ids = {parse(n)[0] for n in names["query"]}
    gallery_ids = {parse(n)[0] for n in names["gallery"]}
    assert len(train_ids) == 6 and len(query_ids) == 6
    assert not train_ids & (query_ids | gallery_ids), "train and test identities overlap"
    assert {-1, 0} <= gallery_ids, "the gallery lacks junk (-1) or distractors (0000)"
    assert not {-1, 0} & (train_ids | query_ids)
    assert len(set(sum(names.values(), []))) == sum(len(files) for files in names.values()), "duplicate names"


def test_every_query_has_a_gallery_match_in_another_camera(market):
    names = listing(market)
    gallery = defaultdict(set)
    for name in names["gallery"]:
        pid, camera = parse(name)
        gallery[pid].add(camera)
    query_cameras = defaultdict(list)
    for name in names["query"]:
        pid, camera = parse(name)
        query_cameras[pid].append(camera)
        assert gallery[pid] - {camera}, f"query {name} has no gallery image of its identity in another camera"
    # One query per (identity, camera), as in Market-1501, and every such camera keeps gallery images.
    for pid, cameras in query_cameras.items():
        assert len(cameras) == len(set(cameras)) and set(cameras) == gallery[pid]


def test_generator_is_deterministic(market, tmp_path):
    def digests(root: Path) -> dict[str, str]:
        return {f"{folder}/{p.name}": hashlib.sha256(p.read_bytes()).hexdigest()
                for folder in FOLDERS.values() for p in (root / folder).iterdir()}

    generate_market(tmp_path / "again", ids=6, images_per_id=6, seed=3)
    generate_market(tmp_path / "other", ids=6, images_per_id=6, seed=4)
    assert digests(tmp_path / "again") == digests(market)
    assert digests(tmp_path / "other") != digests(market)


def test_identity_appearance_persists_and_differs():
    same = synthetic_market.make_identity(0, 7), synthetic_market.make_identity(0, 7)
    other = synthetic_market.make_identity(0, 8)
    assert np.array_equal(same[0].upper, same[1].upper) and same[0].bag == same[1].bag
    assert not (np.array_equal(same[0].upper, other.upper) and np.array_equal(same[0].lower, other.lower))


def test_generator_bad_arguments(tmp_path, capsys):
    with pytest.raises(ValueError, match="--ids"):
        generate_market(tmp_path / "a", ids=0)
    with pytest.raises(ValueError, match="--images-per-id"):
        generate_market(tmp_path / "b", images_per_id=3)
    (tmp_path / "taken").mkdir()
    with pytest.raises(FileExistsError, match="taken"):
        generate_market(tmp_path / "taken", ids=1, images_per_id=4)
    with pytest.raises(SystemExit, match="^error: .*taken already exists"):
        synthetic_market.main([str(tmp_path / "taken")])
    with pytest.raises(SystemExit, match="^error: --images-per-id"):
        synthetic_market.main([str(tmp_path / "c"), "--images-per-id", "2"])
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()


def test_cli_writes_a_set(tmp_path, capsys):
    synthetic_market.main([str(tmp_path / "cli"), "--ids", "2", "--images-per-id", "4", "--seed", "1"])
    assert "train images" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "cli").iterdir()) == sorted([*FOLDERS.values(), "synthetic_market.json"])
    assert dataset_name(tmp_path / "cli") == "synthetic Market-1501" and dataset_name(tmp_path) == "Market-1501"


# --------------------------------------------------------------------------- Market1501
@pytest.mark.parametrize("name, pid, camera", [
    ("0002_c1s1_000451_03.jpg", 2, 1), ("-1_c1s1_000000_00.jpg", -1, 1), ("0000_c6s3_087327_02.jpg", 0, 6),
    ("1501_c6s4_001877_03.jpg", 1501, 6), ("0431_c5s1_105373_04.jpg", 431, 5)])
def test_get_id_and_camera_on_real_names(market, name, pid, camera):
    dataset = Market1501(market, "train")
    for path in (name, f"/data/Market-1501-v15.09.15/bounding_box_test/{name}", Path("query") / name):
        assert dataset.get_id(path) == pid
        assert camera_of(path) == camera


@pytest.mark.parametrize("split", ["train", "query", "gallery"])
def test_market1501_matches_an_independent_parser(market, split):
    dataset = Market1501(market, split)
    files = [name for name in listing(market)[split] if parse(name)[0] != -1]
    assert [Path(path).name for path in dataset.imgs] == sorted(files)
    assert dataset.imgs == sorted(dataset.imgs)
    assert dataset.ids == [parse(name)[0] for name in sorted(files)]
    assert dataset.cameras == [parse(name)[1] for name in sorted(files)]
    assert len(dataset) == len(files)
    for index in range(len(dataset)):
        image, label = dataset[index]
        assert dataset.unique_ids[label] == dataset.get_id(dataset.imgs[index])
    for index in (0, len(dataset) - 1):
        with Image.open(dataset.imgs[index]) as file:
            assert np.array_equal(np.asarray(dataset[index][0]), np.asarray(file.convert("RGB")))
    shape, _ = Market1501(market, split, transform=lambda image: np.asarray(image).shape)[0]
    assert shape == (128, 64, 3)


def test_labels_train_0_to_c_minus_1_and_one_map_for_query_and_gallery(market):
    train = Market1501(market, "train")
    assert train.unique_ids == sorted({parse(name)[0] for name in listing(market)["train"]})
    assert sorted(set(train.labels)) == list(range(len(train.unique_ids)))
    query, gallery = Market1501(market, "query"), Market1501(market, "gallery")
    test_ids = {parse(name)[0] for split in ("query", "gallery") for name in listing(market)[split]} - {-1}
    assert query.unique_ids == gallery.unique_ids == sorted(test_ids)
    label_in_gallery = dict(zip(gallery.ids, gallery.labels))
    assert all(label_in_gallery[pid] == label for pid, label in zip(query.ids, query.labels))


def test_distractors_stay_in_the_gallery(market):
    assert 0 in Market1501(market, "gallery").ids
    assert -1 not in Market1501(market, "gallery").ids


def test_transforms_give_tensors_of_the_asked_size(market):
    dataset = Market1501(market, "query", transform=evaluation_transform(64, 32))
    image, _ = dataset[0]
    assert image.shape == (3, 64, 32) and image.dtype == torch.float32
    with Image.open(dataset.imgs[0]) as file:
        pixels = torch.from_numpy(np.asarray(file.convert("RGB").resize((32, 64), Image.BILINEAR), dtype=np.float32))
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    expected = ((pixels / 255 - mean) / std).permute(2, 0, 1)
    assert (image - expected).abs().mean() < 0.05  # antialiased vs plain bilinear resizing
    assert torch.equal(dataset[0][0], image)  # no randomness at test time


def test_train_transform_flips_shifts_and_erases():
    image = Image.fromarray(np.arange(64 * 32 * 3, dtype=np.uint8).reshape(64, 32, 3))
    plain = evaluation_transform(64, 32)(image)
    flips = [torch.equal(train_transform(64, 32, padding=0, erasing=0.0)(image), plain.flip(2)) for _ in range(40)]
    assert 5 < sum(flips) < 35, "the horizontal flip should happen about half of the time"
    torch.manual_seed(0)
    shifted = [train_transform(64, 32, padding=3, erasing=0.0)(image) for _ in range(20)]
    assert all(tensor.shape == (3, 64, 32) for tensor in shifted)
    assert any(not torch.equal(tensor, plain) and not torch.equal(tensor, plain.flip(2)) for tensor in shifted)
    erased = train_transform(64, 32, padding=0, erasing=1.0)(image)
    zero = (erased == 0).all(0)
    rows, cols = zero.any(1), zero.any(0)
    assert zero.sum() == rows.sum() * cols.sum() > 0, "random erasing blanks one rectangle"


def make_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    for folder in FOLDERS.values():
        (root / folder).mkdir(parents=True)
        Image.new("RGB", (64, 128), (200, 10, 10)).save(root / folder / "0001_c1s1_000010_01.jpg")
    return root


def one_line(message: str) -> bool:
    return "\n" not in message.strip()


def test_missing_folders_is_one_line_error(tmp_path):
    root = make_root(tmp_path)
    (root / "query" / "0001_c1s1_000010_01.jpg").unlink()
    (root / "query").rmdir()
    with pytest.raises(FileNotFoundError) as error:
        Market1501(root, "train")
    assert one_line(str(error.value)) and "query/" in str(error.value) and str(root) in str(error.value)
    with pytest.raises(FileNotFoundError):
        Market1501(tmp_path / "nowhere", "gallery")


def test_bad_file_name_is_one_line_error(tmp_path):
    root = make_root(tmp_path)
    Image.new("RGB", (64, 128)).save(root / "query" / "person_2.jpg")
    with pytest.raises(ValueError) as error:
        Market1501(root, "query")
    assert one_line(str(error.value)) and "person_2.jpg" in str(error.value)
    with pytest.raises(ValueError, match="person_2.jpg"):
        camera_of("person_2.jpg")


def test_non_images_are_ignored_and_corrupt_images_named(tmp_path):
    root = make_root(tmp_path)
    (root / "bounding_box_train" / "Thumbs.db").write_bytes(b"\x00\x01")
    (root / "bounding_box_train" / "readme.txt").write_text("not an image")
    assert [Path(p).name for p in Market1501(root, "train").imgs] == ["0001_c1s1_000010_01.jpg"]
    corrupt = root / "bounding_box_train" / "0002_c2s1_000020_01.jpg"
    corrupt.write_bytes(b"truncated")
    dataset = Market1501(root, "train")
    with pytest.raises(UnreadableImageError) as error:
        dataset[1]
    assert one_line(str(error.value)) and corrupt.name in str(error.value)


def test_unknown_split(tmp_path):
    with pytest.raises(ValueError, match="split"):
        Market1501(make_root(tmp_path), "test")


# --------------------------------------------------------------------------- evaluation sets
def test_dry_run_subsets_keep_the_queries_people(market):
    query, gallery = Market1501(market, "query"), Market1501(market, "gallery")
    small_query, small_gallery = dry_run_subsets(query, gallery)
    assert small_query.imgs == query.imgs[:len(small_query)]
    assert {parse(Path(p).name)[0] for p in small_query.imgs} <= {parse(Path(p).name)[0] for p in small_gallery.imgs}
    assert small_gallery.imgs == sorted(small_gallery.imgs) and set(small_gallery.imgs) <= set(gallery.imgs)
    image, label = small_gallery[1]
    assert label == gallery[gallery.imgs.index(small_gallery.imgs[1])][1]
    ids, cameras = ids_and_cameras(small_gallery)
    assert ids.tolist() == [parse(Path(p).name)[0] for p in small_gallery.imgs]
    assert cameras.tolist() == [parse(Path(p).name)[1] for p in small_gallery.imgs]


def test_evaluation_sets_without_a_cross_camera_match_are_refused(tmp_path):
    root = make_root(tmp_path)  # query person 1 is in the gallery, under its own camera only
    with pytest.raises(ValueError, match="no query person appears in the gallery under another camera") as error:
        check_evaluation_sets(Market1501(root, "query"), Market1501(root, "gallery"))
    assert one_line(str(error.value))
    Image.new("RGB", (64, 128)).save(root / "bounding_box_test" / "0001_c2s1_000020_01.jpg")
    check_evaluation_sets(Market1501(root, "query"), Market1501(root, "gallery"))
