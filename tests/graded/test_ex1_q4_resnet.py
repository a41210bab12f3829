"""Ex1 Q4: the hand-written ResNet-18 against torchvision's (parameters, stage sizes, the residual block)."""

from __future__ import annotations

from collections import Counter

import torch

from reference import models

from .checks import close, tensor

STAGES = ("layer1", "layer2", "layer3", "layer4")
# Output of each stage for a 28 x 28 digit: the ImageNet stem divides by 4, stages 2-4 halve again.
STAGE_SHAPES = {"imagenet": ([2, 64, 7, 7], [2, 128, 4, 4], [2, 256, 2, 2], [2, 512, 1, 1]),
                "cifar": ([2, 64, 28, 28], [2, 128, 14, 14], [2, 256, 7, 7], [2, 512, 4, 4])}


def test_parameter_count_matches_torchvision(run):
    """ResNet18(stem="imagenet"/"cifar") has as many parameters as torchvision's resnet18 with that stem"""
    value = run.probe("ex1_q4_parameters")
    for stem in ("imagenet", "cifar"):
        expected = models.parameter_count(models.torchvision_resnet18(stem))
        got = value[stem]["count"]
        assert got == expected, f"ResNet18(stem={stem!r}) has {got:,} parameters, torchvision's has {expected:,}"


def test_parameter_shapes_match_torchvision(run):
    """Its parameter shapes are torchvision's, one for one (channels 64-128-256-512, 1x1 downsampling shortcuts)"""
    value = run.probe("ex1_q4_parameters")
    for stem in ("imagenet", "cifar"):
        expected = models.parameter_shapes(models.torchvision_resnet18(stem))
        got = {tuple(shape) for shape in value[stem]["shapes"]}
        counted = Counter(tuple(shape) for shape in value[stem]["shapes"])
        missing = sorted(set(expected) - got)
        assert counted == expected, (f"ResNet18(stem={stem!r}): parameter shapes differ from torchvision's"
                                     + (f" (missing e.g. {list(missing[0])})" if missing else ""))


def test_stage_output_sizes(run):
    """layer1..layer4 give 64/128/256/512 channels and halve the resolution from layer2 on (both stems)"""
    value = run.probe("ex1_q4_stages")
    for stem, expected in STAGE_SHAPES.items():
        for name, shape in zip(STAGES, expected):
            assert value[stem].get(name) == shape, \
                f"stem {stem!r}: {name} outputs {value[stem].get(name)} on a (2, 1, 28, 28) batch, expected {shape}"


def test_basic_block_adds_the_shortcut(run):
    """BasicBlock: relu(F(x) + shortcut(x)); with its batch norms zeroed, an identity block gives relu(x)"""
    value = run.probe("ex1_q4_block")
    x = run.inputs["block_x"].double()
    close(value["identity"], torch.relu(x), "BasicBlock(8, 8, 1) with zeroed batch norms on x", atol=1e-5)
    assert value["down_shape"] == [2, 16, 3, 3], \
        f"BasicBlock(8, 16, stride=2) gives {value['down_shape']} on a (2, 8, 6, 6) input, expected [2, 16, 3, 3]"


def test_forward_gives_logits(run):
    """ResNet18()(x) gives finite (N, 10) logits that depend on the image"""
    logits = tensor(run.probe("ex1_q4_forward")["logits"], "ResNet18()(x)", (2, 10))
    assert torch.isfinite(logits).all(), "ResNet18()(x) has NaN or inf values"
    assert not torch.allclose(logits[0], logits[1]), "ResNet18() gives the same logits for two different images"


def test_training_steps_reduce_the_loss(run):
    """12 SGD steps on 16 images bring the cross-entropy below half its start (the network can learn)"""
    losses = run.probe("ex1_q4_fit")["losses"]
    assert len(losses) == 12 and all(isinstance(v, float) for v in losses), "the training steps gave no losses"
    assert losses[-1] < 0.5 * losses[0], f"loss {losses[0]:.3f} -> {losses[-1]:.3f} after 12 steps: it barely learns"
