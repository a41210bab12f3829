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
ARCHITECTURE = "ReIDNet"
CONFIG_KEYS = ("architecture", "backbone", "num_classes", "feat_dim")


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
    Any H, W of at least 32 pixels works (the backbone ends with a global average pool).
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
        self.backbone_name = backbone
        self.num_classes = int(num_classes)
        self.feat_dim = int(feat_dim)

        # weights=None: torchvision builds a randomly initialised network and never touches the network.
        self.backbone = torchvision.models.get_model(backbone, weights=None)
        self.backbone.fc = nn.Identity()
        if weights is not None:
            load_backbone_state(self.backbone, load_checkpoint(weights), weights)
        elif pretrained:
            self._load_cached_imagenet_weights()

        self.fc1 = nn.Sequential(nn.Linear(BACKBONE_DIMS[backbone], self.feat_dim), nn.BatchNorm1d(self.feat_dim))
        self.fc2 = nn.Linear(self.feat_dim, self.num_classes)
        self._init_head()
        # END SOLUTION

    def _load_cached_imagenet_weights(self) -> None:
        candidates = cached_imagenet_weight_paths(self.backbone_name)
        for path in candidates:
            if path.is_file():
                load_backbone_state(self.backbone, load_checkpoint(path), path)
                return
        raise FileNotFoundError(
            f"pretrained {self.backbone_name} ImageNet weights not in the local torch cache "
            f"(expected {candidates[0]}); copy torchvision's file there, pass --weights PATH, or drop --pretrained"
        )

    def _init_head(self) -> None:
        linear, batch_norm = self.fc1
        nn.init.kaiming_normal_(linear.weight, mode="fan_out")
        nn.init.zeros_(linear.bias)
        nn.init.ones_(batch_norm.weight)
        nn.init.zeros_(batch_norm.bias)
        # Small logits at the start: the cross-entropy begins near log(num_classes) for every identity.
        nn.init.normal_(self.fc2.weight, std=0.001)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # BEGIN SOLUTION
        pooled = self.backbone(x)
        features = self.fc1(pooled)
        logits = self.fc2(features)
        return torch.cat([logits, features], 1), logits, features
        # END SOLUTION

    @property
    def config(self) -> dict[str, Any]:
        """What :meth:`from_config` needs to rebuild this network; store it in checkpoints."""
        return {
            "architecture": ARCHITECTURE,
            "backbone": self.backbone_name,
            "num_classes": self.num_classes,
            "feat_dim": self.feat_dim,
        }

    @classmethod
    def from_config(
        cls,
        config: Any,
        state_dict: dict[str, torch.Tensor] | None = None,
        source: str | os.PathLike = "checkpoint",
    ) -> "ReIDNet":
        """Rebuild a network from :attr:`config`, then load ``state_dict`` (strictly) when given.

        The backbone starts random (no ImageNet file needed): the saved weights replace it.

        Raises:
            ValueError: the config or the state dict does not describe a ReIDNet (one line naming ``source``).
        """
        if not isinstance(config, dict) or config.get("architecture") != ARCHITECTURE:
            raise ValueError(f"{source}: model config is not a {ARCHITECTURE} config (got {config!r:.120})")
        if set(config) != set(CONFIG_KEYS):
            raise ValueError(f"{source}: model config keys {sorted(config)} differ from {sorted(CONFIG_KEYS)}")
        try:
            model = cls(config["num_classes"], backbone=config["backbone"], feat_dim=config["feat_dim"])
        except (ValueError, TypeError) as error:
            raise ValueError(f"{source}: bad model config ({error})") from None
        if state_dict is not None:
            try:
                model.load_state_dict(state_dict, strict=True)
            except RuntimeError as error:
                raise ValueError(f"{source}: weights do not match the model config ({one_line(error)})") from None
        return model
