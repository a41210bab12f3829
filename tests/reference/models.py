"""Reference for Ex1 Q4 and Ex2 Q5: torchvision's ResNets as the parameter-count and layer-shape oracle."""

from __future__ import annotations

from collections import Counter

import torch
import torchvision
from torch import nn


def torchvision_resnet(name: str) -> nn.Module:
    """torchvision's ``name`` as built by ``get_model`` (shapes only, on the meta device)."""
    with torch.device("meta"):
        return torchvision.models.get_model(name, weights=None)


def torchvision_resnet18(stem: str, in_channels: int = 1, num_classes: int = 10) -> nn.Module:
    """torchvision's resnet18 with conv1 replaced by the given stem for ``in_channels`` inputs.

    ``imagenet``: 7x7/2 conv + 3x3/2 max-pool (torchvision's own); ``cifar``: 3x3/1 conv, no max-pool.
    """
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        model = torchvision.models.resnet18(num_classes=num_classes)
        return _with_stem(model, stem, in_channels)


def _with_stem(model: nn.Module, stem: str, in_channels: int) -> nn.Module:
    if stem == "imagenet":
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    elif stem == "cifar":
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    else:
        raise ValueError(stem)
    return model


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def parameter_shapes(model: nn.Module) -> Counter:
    """Multiset of parameter shapes (names differ between implementations, shapes do not)."""
    return Counter(tuple(p.shape) for p in model.parameters())
