"""Exercise 2 Q5: the re-identification network, a ResNet backbone with two fully connected layers.

    image (B, 3, H, W)
      -> torchvision ResNet without its ImageNet classifier   -> (B, backbone_dim)   global average pool
      -> FC1: Linear(backbone_dim, feat_dim) + BatchNorm1d     -> features (B, feat_dim)  metric embedding
      -> FC2: Linear(feat_dim, num_classes)                    -> logits (B, num_classes) identity scores

``features`` feed the triplet loss and, at test time, the gallery ranking (identities never seen in
training are compared by distance). ``logits`` feed the identity cross-entropy, which only exists for
the training identities. ``forward`` returns ``(torch.cat([logits, features], 1), logits, features)``,
the TP's order.

ImageNet weights are never downloaded: ``pretrained=True`` uses torchvision's weight file only when it
already sits in the local torch hub cache, and ``weights=PATH`` loads a ResNet state dict from a file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

from utils.io import load_checkpoint

BACKBONE_DIMS = {"resnet18": 512, "resnet34": 512, "resnet50": 2048, "resnet101": 2048, "resnet152": 2048}


def one_line(error: Exception, limit: int = 240) -> str:
    """``error``'s message on one line, cut to ``limit`` characters (load_state_dict's run to pages)."""
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def cached_imagenet_weight_paths(backbone: str) -> list[Path]:
    """Where torchvision would cache the ImageNet weight files of ``backbone``, default version first.

    These are the paths ``torch.hub.load_state_dict_from_url`` reads before it downloads anything:
    ``<torch.hub.get_dir()>/checkpoints/<file name of the URL>``. Nothing is read or fetched here.
    """
    weights_enum = torchvision.models.get_model_weights(backbone)
    ordered = [weights_enum.DEFAULT] + [w for w in weights_enum if w is not weights_enum.DEFAULT]
    cache_dir = Path(torch.hub.get_dir()) / "checkpoints"
    return [cache_dir / os.path.basename(weight.url) for weight in ordered]


def load_backbone_state(backbone_module: nn.Module, state_dict: dict[str, Any], source: str | os.PathLike) -> None:
    """Load a torchvision ResNet state dict into ``backbone_module``, ignoring the ImageNet classifier.

    Raises:
        ValueError: the state dict is not one of this ResNet (one line naming ``source``).
    """
    if "state_dict" in state_dict and isinstance(state_dict["state_dict"], dict):
        state_dict = state_dict["state_dict"]
    kept = {key: value for key, value in state_dict.items() if not key.startswith("fc.")}
    try:
        backbone_module.load_state_dict(kept, strict=True)
    except RuntimeError as error:
        raise ValueError(f"{source}: not a state dict of this ResNet backbone ({one_line(error)})") from None


def load_pretrained_backbone(backbone_module: nn.Module, backbone: str,
                             weights: str | os.PathLike | None = None) -> None:
    """Start ``backbone_module`` (a torchvision ``backbone`` without its classifier) from ImageNet weights.

    ``weights`` names a ResNet state dict file; without it, torchvision's own file must already sit in the
    local torch hub cache (nothing is downloaded).

    Raises:
        FileNotFoundError: no such file (the message gives the path expected in the cache).
        ValueError: the file is not a state dict of this ResNet.
    """
    if weights is not None:
        load_backbone_state(backbone_module, load_checkpoint(weights), weights)
        return
    candidates = cached_imagenet_weight_paths(backbone)
    for path in candidates:
        if path.is_file():
            load_backbone_state(backbone_module, load_checkpoint(path), path)
            return
    raise FileNotFoundError(
        f"pretrained {backbone} ImageNet weights not in the local torch cache (expected {candidates[0]}); "
        "copy torchvision's file there, pass --weights PATH, or drop --pretrained")


class ReIDNet(nn.Module):
    """ResNet backbone + FC1 (embedding, batch-normalised) + FC2 (identity logits).

    Args:
        num_classes: number of training identities (outputs of FC2).
        backbone: ``"resnet18"``, ``"resnet34"``, ``"resnet50"``, ``"resnet101"`` or ``"resnet152"``.
        feat_dim: size of the metric embedding (outputs of FC1).
        pretrained: start the backbone from torchvision's ImageNet weights, found in the local torch hub
            cache (never downloaded; :class:`FileNotFoundError` with the expected path when missing).
        weights: path of a torchvision ResNet state dict to start the backbone from (takes precedence
            over ``pretrained``); loaded with ``weights_only=True``.

    ``forward(x)`` with ``x`` (B, 3, H, W) returns ``(cat, logits, features)``: ``logits`` (B, num_classes),
    ``features`` (B, feat_dim) and ``cat = torch.cat([logits, features], 1)`` (B, num_classes + feat_dim).
    The backbone divides H and W by 32, then pools globally (``main.py`` asks for at least 16 pixels).
    """

    def __init__(
        self,
        num_classes: int,
        backbone: str = "resnet50",
        feat_dim: int = 512,
        pretrained: bool = False,
        weights: str | os.PathLike | None = None,
    ) -> None:
        # BEGIN SOLUTION
        super().__init__()
        if backbone not in BACKBONE_DIMS:
            raise ValueError(f"backbone: expected one of {', '.join(BACKBONE_DIMS)}, got {backbone!r}")
        if int(num_classes) != num_classes or num_classes < 1:
            raise ValueError(f"num_classes: expected a positive integer, got {num_classes!r}")
        if int(feat_dim) != feat_dim or feat_dim < 1:
            raise ValueError(f"feat_dim: expected a positive integer, got {feat_dim!r}")
        # weights=None: torchvision builds a randomly initialised network and downloads nothing.
        self.backbone = torchvision.models.get_model(backbone, weights=None)
        self.backbone.fc = nn.Identity()  # keep the globally pooled features, drop the ImageNet classifier
        if pretrained or weights is not None:
            load_pretrained_backbone(self.backbone, backbone, weights)
        # No ReLU after FC1: the embedding may use the whole space, and its batch norm puts every
        # dimension on the same scale, so that none dominates the Euclidean distance.
        self.FC1 = nn.Sequential(nn.Linear(BACKBONE_DIMS[backbone], feat_dim), nn.BatchNorm1d(feat_dim))
        self.FC2 = nn.Linear(feat_dim, num_classes)
        nn.init.kaiming_normal_(self.FC1[0].weight, mode="fan_out")
        nn.init.zeros_(self.FC1[0].bias)
        # Small logits at the start: the cross-entropy begins near log(num_classes) for every identity.
        nn.init.normal_(self.FC2.weight, std=0.001)
        nn.init.zeros_(self.FC2.bias)
        # END SOLUTION

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # BEGIN SOLUTION
        features = self.FC1(self.backbone(x))
        logits = self.FC2(features)
        return torch.cat([logits, features], 1), logits, features
        # END SOLUTION
