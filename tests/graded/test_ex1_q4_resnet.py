"""Ex1 Q4: the hand-written ResNet-18, checked against torchvision's resnet18 with the same stem."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from reference import models

pytestmark = pytest.mark.timeout(30, method="signal")
FILE = "exercise1/q4_resnet.py"


def build(submission, stem: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return submission.get(FILE, "ResNet18")(num_classes=10, in_channels=1, stem=stem)


def check_parameter_count(submission, stem: str) -> None:
    count = models.parameter_count(build(submission, stem))
    expected = models.parameter_count(models.torchvision_resnet18(stem))
    assert count == expected, f"ResNet18(stem={stem!r}) has {count:,} parameters, torchvision's resnet18 " \
                              f"with the same stem has {expected:,}"


def test_parameter_count_imagenet_stem(submission):
    """ResNet18(stem="imagenet") has as many parameters as torchvision's resnet18 with a 1-channel 7x7/2 stem."""
    check_parameter_count(submission, "imagenet")


def test_parameter_count_cifar_stem(submission):
    """ResNet18(stem="cifar") has as many parameters as torchvision's resnet18 with a 1-channel 3x3/1 stem."""
    check_parameter_count(submission, "cifar")


def test_layer_shapes_match_torchvision(submission):
    """Every parameter shape of ResNet18 (both stems) matches one of torchvision's resnet18 (blocks [2, 2, 2, 2])."""
    for stem in ("imagenet", "cifar"):
        shapes = models.parameter_shapes(build(submission, stem))
        expected = models.parameter_shapes(models.torchvision_resnet18(stem))
        extra, missing = shapes - expected, expected - shapes
        assert not extra and not missing, f"ResNet18(stem={stem!r}) parameter shapes differ from torchvision's: " \
                                          f"extra {dict(extra)}, missing {dict(missing)}"


def test_output_shape(submission):
    """ResNet18 maps (N, 1, 28, 28) digits to (N, 10) finite logits with both stems, in train and eval mode."""
    for stem in ("imagenet", "cifar"):
        model = build(submission, stem)
        for mode in ("train", "eval"):
            getattr(model, mode)()
            with torch.no_grad():
                logits = model(torch.rand(3, 1, 28, 28))
            assert tuple(logits.shape) == (3, 10), \
                f"ResNet18(stem={stem!r}) in {mode} mode: output shape {tuple(logits.shape)}, expected (3, 10)"
            assert torch.isfinite(logits).all(), f"ResNet18(stem={stem!r}) gives non-finite logits"


def test_training_steps_reduce_the_loss(submission):
    """Six SGD steps on one small batch reduce its cross-entropy (the network learns)."""
    model = build(submission, "imagenet")
    generator = torch.Generator().manual_seed(0)
    images, labels = torch.rand(16, 1, 28, 28, generator=generator), torch.arange(16) % 10
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    losses = []
    for _ in range(6):
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert min(losses[-2:]) < 0.5 * losses[0], \
        f"cross-entropy went from {losses[0]:.3f} to {min(losses[-2:]):.3f} in 6 SGD steps on one batch of 16; " \
        "expected it to halve"
