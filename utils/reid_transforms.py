"""The image transforms of Exercise 2, as torchvision ``transforms.v2`` pipelines (one PIL image in, one tensor out).

Training (``train_transform``), following the "bag of tricks" baseline (Luo et al. 2019): resize, random
horizontal flip, zero padding + random crop (a random shift), ImageNet standardisation, random erasing.
Evaluation (``evaluation_transform``): resize and standardisation only, so an image always gives the same tensor.

Randomness comes from torch's generator of the process that runs the transform (a ``DataLoader`` worker
seeds its own from the loader's base seed), so a seeded epoch gives the same batches every time.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_tensor(height: int, width: int) -> v2.Compose:
    """PIL image -> uint8 tensor (3, height, width): the deterministic first steps of both pipelines."""
    return v2.Compose([v2.Resize((height, width), antialias=True), v2.ToImage()])


def standardize() -> v2.Compose:
    """uint8 tensor -> float32 standardised with the ImageNet statistics (what the ResNets expect)."""
    return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def train_transform(height: int, width: int, padding: int, erasing: float) -> v2.Compose:
    """Training pipeline: flip (p = 0.5), pad ``padding`` px + random crop, standardise, erase with ``erasing``.

    Random erasing (Zhong et al. 2020) blanks one random rectangle (2-40 % of the image, set to 0, the mean
    colour after standardisation): it simulates occlusion, which re-identification must survive.
    """
    return v2.Compose([
        to_tensor(height, width),
        v2.RandomHorizontalFlip(0.5),
        v2.RandomCrop((height, width), padding=padding) if padding > 0 else v2.Identity(),
        standardize(),
        v2.RandomErasing(erasing, scale=(0.02, 0.4), value=0) if erasing > 0 else v2.Identity(),
    ])


def evaluation_transform(height: int, width: int) -> v2.Compose:
    """Evaluation pipeline: resize and standardise (no randomness)."""
    return v2.Compose([to_tensor(height, width), standardize()])
