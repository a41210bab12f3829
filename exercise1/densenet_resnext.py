"""Sibling lab B: DenseNet-BC and ResNeXt for 28x28 MNIST digits (``q4_resnet.py --arch ...``).

DenseNet-BC (Huang et al. 2017): inside a dense block every layer sees the concatenation of all earlier
feature maps and adds ``growth_rate`` (k) new ones through a bottleneck ``BN-ReLU-1x1 conv (4k)-BN-ReLU-3x3
conv (k)``; between blocks a transition ``BN-1x1 conv-2x2 avg-pool`` halves the channels (compression 0.5)
and the resolution. ``densenet()`` has blocks [2, 5, 4, 6] (39 conv + linear layers); ``densenet52()`` the
classic 3-block depth-52 DenseNet-BC, blocks [8, 8, 8].

ResNeXt (Xie et al. 2017): a bottleneck residual block whose 3x3 convolution is split into ``cardinality``
groups of ``bottleneck_width`` channels (a grouped convolution); the output is expanded x2, and the
bottleneck width doubles at each stage. ``resnext32_16x8d()`` = ``ResNeXt([3, 3, 3], 16, 8)``.

All take ``(N, in_channels, 28, 28)`` and return ``(N, num_classes)`` logits.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


# --------------------------------------------------------------------------- DenseNet-BC
class DenseBottleneck(nn.Module):
    """``BN-ReLU-1x1 (4k)-BN-ReLU-3x3 (k)``, output concatenated to the input: C -> C + k channels."""

    def __init__(self, in_planes: int, growth_rate: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, 4 * growth_rate, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(4 * growth_rate)
        self.conv2 = nn.Conv2d(4 * growth_rate, growth_rate, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        new = self.conv2(F.relu(self.bn2(self.conv1(F.relu(self.bn1(x))))))
        return torch.cat([new, x], 1)


class Transition(nn.Module):
    """``BN-1x1 conv-2x2 avg-pool``: compresses the channels and halves the resolution."""

    def __init__(self, in_planes: int, out_planes: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(in_planes)
        self.conv = nn.Conv2d(in_planes, out_planes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.conv(F.relu(self.bn(x))), 2)


class DenseNet(nn.Module):
    """DenseNet-BC: a 3x3 stem of 2k channels, dense blocks separated by transitions, BN-ReLU, global pool, linear.

    Args:
        num_blocks: bottleneck layers per dense block (a transition follows every block but the last).
        growth_rate: k, channels each bottleneck adds.
        reduction: compression of the transitions (0.5 halves the channels).
    """

    def __init__(self, num_blocks: list[int], growth_rate: int = 12, reduction: float = 0.5,
                 num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        planes = 2 * growth_rate
        self.conv1 = nn.Conv2d(in_channels, planes, 3, padding=1, bias=False)
        stages: list[nn.Module] = []
        for index, layers in enumerate(num_blocks):
            block = []
            for _ in range(layers):
                block.append(DenseBottleneck(planes, growth_rate))
                planes += growth_rate
            stages.append(nn.Sequential(*block))
            if index < len(num_blocks) - 1:
                # Transitions halve the resolution: 28 -> 14 -> 7 -> 3 with four blocks.
                compressed = int(math.floor(planes * reduction))
                stages.append(Transition(planes, compressed))
                planes = compressed
        self.features = nn.Sequential(*stages)
        self.bn = nn.BatchNorm2d(planes)
        self.linear = nn.Linear(planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn(self.features(self.conv1(x))))
        return self.linear(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


def densenet(num_classes: int = 10, in_channels: int = 1) -> DenseNet:
    """The lab's DenseNet-BC: blocks [2, 5, 4, 6], growth rate 12, compression 0.5 (39 conv + linear layers)."""
    return DenseNet([2, 5, 4, 6], 12, 0.5, num_classes, in_channels)


def densenet52(num_classes: int = 10, in_channels: int = 1) -> DenseNet:
    """DenseNet-BC of depth 52 (= 6 x 8 + 4): three blocks of 8 bottlenecks, growth rate 12."""
    return DenseNet([8, 8, 8], 12, 0.5, num_classes, in_channels)


# --------------------------------------------------------------------------- ResNeXt
class ResNeXtBlock(nn.Module):
    """``1x1 -> grouped 3x3 (cardinality groups) -> 1x1 (x2)`` with batch norm, added to a shortcut.

    ``group_width = cardinality * bottleneck_width`` channels inside; ``2 * group_width`` out.
    """

    expansion = 2

    def __init__(self, in_planes: int, cardinality: int, bottleneck_width: int, stride: int = 1):
        super().__init__()
        group_width = cardinality * bottleneck_width
        out_planes = self.expansion * group_width
        self.conv1 = nn.Conv2d(in_planes, group_width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(group_width)
        self.conv2 = nn.Conv2d(group_width, group_width, 3, stride=stride, padding=1, groups=cardinality, bias=False)
        self.bn2 = nn.BatchNorm2d(group_width)
        self.conv3 = nn.Conv2d(group_width, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != out_planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(out_planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        return F.relu(self.bn3(self.conv3(out)) + self.shortcut(x))


class ResNeXt(nn.Module):
    """ResNeXt: a 3x3 stem of 64 channels, stages of ``ResNeXtBlock`` (stride 2 from the second stage on,
    bottleneck width doubling each stage), global average pool, linear.

    ``ResNeXt([3, 3, 3], 16, 8)`` ends with ``2 * 16 * 8 * 4 = 1024`` channels at 7x7 for a 28x28 input.
    """

    def __init__(self, num_blocks: list[int], cardinality: int, bottleneck_width: int, num_classes: int = 10,
                 in_channels: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        planes, width, stages = 64, bottleneck_width, []
        for index, blocks in enumerate(num_blocks):
            layers = []
            for block in range(blocks):
                layers.append(ResNeXtBlock(planes, cardinality, width, stride=2 if index > 0 and block == 0 else 1))
                planes = ResNeXtBlock.expansion * cardinality * width
            stages.append(nn.Sequential(*layers))
            width *= 2
        self.stages = nn.Sequential(*stages)
        self.linear = nn.Linear(planes, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's feature maps, ``(N, 2 * cardinality * final width, H / 4, W / 4)``."""
        return self.stages(F.relu(self.bn1(self.conv1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


def resnext32_16x8d(num_classes: int = 10, in_channels: int = 1) -> ResNeXt:
    """The lab's ResNeXt: three stages of 3 blocks, cardinality 16, bottleneck width 8 (doubling)."""
    return ResNeXt([3, 3, 3], 16, 8, num_classes, in_channels)


ARCHITECTURES = {"densenet": densenet, "densenet52": densenet52, "resnext32_16x8d": resnext32_16x8d}
