"""The code questions as the grading engine runs them: the student files each one reads, its time limit,
and the inputs the parent builds for it (tensors in ``data/inputs.pt`` and tiny datasets beside them).

Inputs are drawn from a generator seeded by the grading seed and the question, so a regrade sees the same
inputs. They are not secret (the child sees them); what a correct answer gives is computed by the parent.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from reference.triplet import closest_to_boundary


@dataclass(frozen=True)
class CodeQuestion:
    key: str
    files: tuple[str, ...]  # the student files this question grades: every other file is the handed-out one
    build: Callable[[Path, np.random.Generator], dict[str, Any]]
    doubles: tuple[str, ...] = ()  # the child/doubles_<name>.py modules its child gets (and no other)
    wall_seconds: float = 60.0


# --------------------------------------------------------------------------- tiny datasets
def write_tiny_mnist(root: Path, train_labels: np.ndarray, test_labels: np.ndarray, rng: np.random.Generator) -> Path:
    """IDX files in torchvision's layout (``root/MNIST/raw``): a bright bar whose place depends on the digit."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, labels in (("train", train_labels), ("t10k", test_labels)):
        images = rng.integers(0, 50, (len(labels), 28, 28)).astype(np.uint8)
        for image, label in zip(images, labels):
            row, column = 3 + 12 * (label // 5), 3 + 5 * (label % 5)
            image[row: row + 10, column: column + 4] = 230
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 0x803, len(labels), 28, 28)
                                                          + images.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x801, len(labels))
                                                          + labels.astype(np.uint8).tobytes())
    return root


def fingerprint_mnist(root: Path, train: int, test: int, rng: np.random.Generator) -> None:
    """Training digits 0-6 only, test digits all 7s: a curve computed on the wrong split shows it."""
    write_tiny_mnist(root, rng.integers(0, 7, train), np.full(test, 7), rng)


MARKET_FOLDERS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}


def market_name(person: int, camera: int, frame: int) -> str:
    person_text = "-1" if person == -1 else f"{person:04d}"
    return f"{person_text}_c{camera}s{1 + frame % 5}_{frame:06d}_{1 + frame % 7:02d}.jpg"


def write_market(root: Path, layout: dict[str, list[tuple[int, int]]], size: tuple[int, int],
                 rng: np.random.Generator) -> dict[str, list[str]]:
    """JPEGs in Market-1501's layout, created in a shuffled order, plus a non-image file per folder.

    Each person has a colour layout of their own (bands of rows), each image its own noise, so no two
    images are equally distant from a third.
    """
    from PIL import Image

    height, width = size
    names: dict[str, list[str]] = {}
    entries = []
    frame = 0
    for split, items in layout.items():
        names[split] = []
        for person, camera in items:
            frame += 1
            names[split].append(market_name(person, camera, frame))
            entries.append((split, names[split][-1], person, camera))
    for index in rng.permutation(len(entries)):
        split, name, person, camera = entries[index]
        folder = root / MARKET_FOLDERS[split]
        folder.mkdir(parents=True, exist_ok=True)
        person_rng = np.random.default_rng(abs(person) * 7919 + 11)
        bands = person_rng.integers(20, 236, (4, 3))
        pixels = np.repeat(bands, -(-height // 4), axis=0)[:height, None, :].repeat(width, axis=1).astype(float)
        pixels = pixels * (0.9 + 0.03 * camera) + rng.normal(0, 8, pixels.shape)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / name, quality=95)
    for folder in MARKET_FOLDERS.values():
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder / "Thumbs.db").write_bytes(b"not an image")
    return {split: sorted(values) for split, values in names.items()}


# Identities chosen so that ``list(set(ids))`` is not sorted: an unsorted ``unique_ids`` is caught.
TRAIN_IDS = (64, 2, 1499, 33, 7)
TEST_IDS = (65, 1, 1500, 8)


def market_layout() -> dict[str, list[tuple[int, int]]]:
    train = [(person, 1 + (index + person) % 6) for person in TRAIN_IDS for index in range(3)]
    train.append((-1, 2))
    query, gallery = [], []
    for person in TEST_IDS:
        query.append((person, 1 + person % 3))
        gallery += [(person, 4 + person % 3), (person, 1 + (person + 1) % 3), (person, 1 + person % 3)]
    query.append((-1, 5))
    gallery += [(0, 2), (0, 5), (-1, 3), (-1, 6)]
    return {"train": train, "query": query, "gallery": gallery}


# --------------------------------------------------------------------------- inputs per question
def batches(rng: np.random.Generator, sizes: list[int], shape: tuple[int, ...], classes: int) -> list:
    generator = torch.Generator().manual_seed(int(rng.integers(1 << 30)))
    return [(torch.rand((size, *shape), generator=generator),
             torch.randint(0, classes, (size,), generator=generator)) for size in sizes]


def build_ex1_q2(data: Path, rng: np.random.Generator) -> dict[str, Any]:
    generator = torch.Generator().manual_seed(int(rng.integers(1 << 30)))
    net = {"fc1_w": torch.randn(128, 784, generator=generator) * 0.05, "fc1_b": torch.randn(128, generator=generator),
           "fc2_w": torch.randn(10, 128, generator=generator) * 0.3, "fc2_b": torch.randn(10, generator=generator)}
    return {
        "net": net,
        "x": torch.rand(5, 1, 28, 28, generator=generator),
        "train": {"seed": int(rng.integers(1 << 30)), "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-3,
                  "batches": batches(rng, [16, 16, 10], (1, 28, 28), 10)},
        "test": {"seed": int(rng.integers(1 << 30)), "batches": batches(rng, [12, 12, 7], (1, 28, 28), 10)},
    }


def build_ex1_q3(data: Path, rng: np.random.Generator) -> dict[str, Any]:
    fingerprint_mnist(data / "mnist", train=120, test=40, rng=rng)
    return {"epochs": 2, "test_count": 40}


def build_ex1_q4(data: Path, rng: np.random.Generator) -> dict[str, Any]:
    generator = torch.Generator().manual_seed(int(rng.integers(1 << 30)))
    return {
        "x28": torch.rand(2, 1, 28, 28, generator=generator),
        "block_x": torch.randn(2, 8, 6, 6, generator=generator),
        "fit_x": torch.rand(16, 1, 28, 28, generator=generator),
        "fit_y": torch.arange(16) % 4,
    }


GRID_LRS, GRID_WEIGHT_DECAYS, GRID_BATCH_SIZES = (0.5, 0.05), (0.01, 0.001), (8, 64)
GRID_TABLE1_BATCH, GRID_TABLE2_DECAY = 64, 0.001


def grid_cells() -> list[tuple[float, float, float]]:
    """Distinct (lr, weight decay, batch size) cells of the two tables; shared cells listed once."""
    cells = [(lr, wd, float(GRID_TABLE1_BATCH)) for wd in GRID_WEIGHT_DECAYS for lr in GRID_LRS]
    cells += [(lr, GRID_TABLE2_DECAY, float(bs)) for bs in GRID_BATCH_SIZES for lr in GRID_LRS]
    return list(dict.fromkeys(cells))


def build_ex1_q5(data: Path, rng: np.random.Generator) -> dict[str, Any]:
    fingerprint_mnist(data / "mnist", train=192, test=48, rng=rng)
    cells = grid_cells()
    bases = rng.permutation(len(cells)) * 0.05 + 0.2  # 0.20, 0.25, ...: every cell its own value
    return {"grid": {"lrs": list(GRID_LRS), "weight_decays": list(GRID_WEIGHT_DECAYS),
                     "batch_sizes": list(GRID_BATCH_SIZES),
                     "fingerprints": [(list(cell), float(base)) for cell, base in zip(cells, bases)],
                     "diverge": [GRID_LRS[0], GRID_TABLE2_DECAY, float(GRID_BATCH_SIZES[0])]}}


def build_ex2_q2(data: Path, rng: np.random.Generator) -> dict[str, Any]:
    generator = torch.Generator().manual_seed(int(rng.integers(1 << 30)))
    cases = []

    def add(kind: str, features: torch.Tensor, labels: torch.Tensor, margin: float, mining: str,
            soft: bool = False, duplicate: bool = False) -> None:
        cases.append({"kind": kind, "features": features.float(), "labels": labels.long(), "margin": margin,
                      "mining": mining, "soft_margin": soft, "duplicate": duplicate})

    # Three points on a line: anchor 0, positive at 1, negative at 3 (and the symmetric roles).
    line = torch.tensor([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0], [3.5, 0.0]])
    add("hand", line, torch.tensor([0, 0, 1, 1]), 2.5, "batch_hard")
    add("hand", line, torch.tensor([0, 1, 0, 1]), 1.0, "batch_hard")
    for mining in ("batch_hard", "batch_all", "semi_hard"):
        for index in range(3):
            labels, margin = torch.arange(12) % (3 + index), [0.3, 1.0, 2.0][index]
            for _ in range(1000):  # far from every mining threshold: float32 and float64 pick the same triplets
                features = torch.randn(12, 5, generator=generator)
                if index == 2:  # two images of one identity at the same point: a zero distance, finite gradients
                    features[3 + index] = features[0]
                if closest_to_boundary(features.numpy(), labels.numpy(), margin) > 1e-3:
                    break
            else:
                raise RuntimeError("no triplet case far enough from the mining thresholds")
            add(mining, features, labels, margin, mining, duplicate=index == 2)
    # Well-separated identities: every anchor's hinge is inactive, the loss must be 0 (not negative).
    centres = torch.eye(4, 5) * 10
    labels = torch.arange(12) % 4
    add("batch_hard", centres[labels] + 0.1 * torch.randn(12, 5, generator=generator), labels, 0.3, "batch_hard")
    for index in range(2):
        add("soft_margin", torch.randn(10, 4, generator=generator), torch.arange(10) % 3, 0.3, "batch_hard", True)
    return {"cases": cases}


def build_ex2_q4(data: Path, rng: np.random.Generator) -> dict[str, Any]:
    names = write_market(data / "market", market_layout(), (16, 8), rng)
    sample = [f"bounding_box_train/{names['train'][i]}" for i in range(0, len(names["train"]), 4)]
    sample += [f"bounding_box_test/{name}" for name in names["gallery"] if name.startswith(("-1", "0000"))][:3]
    sample += [f"query/{names['query'][0]}"]
    return {"names": sample, "written": names}


def build_ex2_q5(data: Path, rng: np.random.Generator) -> dict[str, Any]:
    generator = torch.Generator().manual_seed(int(rng.integers(1 << 30)))
    return {"net": {"num_classes": 7, "feat_dim": 24}, "x": torch.rand(4, 3, 64, 32, generator=generator)}


def build_ex2_q6(data: Path, rng: np.random.Generator) -> dict[str, Any]:
    return {"train": {"seed": int(rng.integers(1 << 30)), "num_classes": 5, "feat_dim": 6, "lr": 0.1,
                      "momentum": 0.9, "batches": batches(rng, [8, 8, 8, 6], (3, 16, 8), 5)}}


EVAL_SIZE = (16, 8)


def build_ex2_q7(data: Path, rng: np.random.Generator) -> dict[str, Any]:
    names = write_market(data / "market", market_layout(), EVAL_SIZE, rng)
    config = {"num_classes": len(TRAIN_IDS), "backbone": "resnet50", "feat_dim": 6, "height": EVAL_SIZE[0],
              "width": EVAL_SIZE[1]}
    return {"checkpoint": {"seed": int(rng.integers(1 << 30)), "config": config}, "written": names}


CODE_QUESTIONS: dict[str, CodeQuestion] = {question.key: question for question in (
    CodeQuestion("ex1_q2", ("exercise1/q2_module_mlp.py",), build_ex1_q2, ("mlp",)),
    CodeQuestion("ex1_q3", ("exercise1/q3_summaries.py",), build_ex1_q3, ("q3",)),
    CodeQuestion("ex1_q4", ("exercise1/q4_resnet.py",), build_ex1_q4, wall_seconds=90.0),
    CodeQuestion("ex1_q5", ("exercise1/q5_grid_search.py",), build_ex1_q5, ("grid",), wall_seconds=90.0),
    CodeQuestion("ex2_q2", ("utils/TripletLoss.py",), build_ex2_q2),
    CodeQuestion("ex2_q4", ("data.py",), build_ex2_q4),
    CodeQuestion("ex2_q5", ("network.py",), build_ex2_q5),
    CodeQuestion("ex2_q6", ("main.py",), build_ex2_q6, ("reid",)),
    CodeQuestion("ex2_q7", ("main.py", "evaluation_tp.py"), build_ex2_q7, ("eval",), wall_seconds=90.0),
)}


def question_seed(grading_seed: int, key: str) -> np.random.Generator:
    digits = [int(part) for part in key.replace("ex", "").split("_q")]
    return np.random.default_rng([grading_seed, *digits])
