"""Ex1 Q2: ``Net``, the MLP as an ``nn.Module``."""

from __future__ import annotations

import pytest
import torch
from torch import nn

pytestmark = pytest.mark.timeout(15, method="signal")
FILE = "exercise1/q2_module_mlp.py"


def test_net_has_the_tp_layers(submission):
    """Net() has FC1 = nn.Linear(784, 128) and FC2 = nn.Linear(128, 10), and nothing else to train."""
    net = submission.get(FILE, "Net")()
    fc1, fc2 = getattr(net, "FC1", None), getattr(net, "FC2", None)
    assert isinstance(fc1, nn.Linear) and (fc1.in_features, fc1.out_features) == (784, 128), \
        f"Net.FC1 should be nn.Linear(784, 128), found {fc1!r}"
    assert isinstance(fc2, nn.Linear) and (fc2.in_features, fc2.out_features) == (128, 10), \
        f"Net.FC2 should be nn.Linear(128, 10), found {fc2!r}"
    count = sum(p.numel() for p in net.parameters())
    assert count == 784 * 128 + 128 + 128 * 10 + 10, f"Net has {count} parameters, expected 101,770"


def test_net_forward_matches_reference(submission):
    """forward gives the logits FC2(sigmoid(FC1(x))) (N, 10) for (N, 1, 28, 28) images and (N, 784) vectors."""
    torch.manual_seed(0)
    net = submission.get(FILE, "Net")()
    net.eval()
    images = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        expected = net.FC2(torch.sigmoid(net.FC1(images.reshape(5, 784))))
        for inputs in (images, images.reshape(5, 784)):
            logits = net(inputs)
            assert tuple(logits.shape) == (5, 10), \
                f"Net()(x) for x of shape {tuple(inputs.shape)} has shape {tuple(logits.shape)}, expected (5, 10)"
            assert torch.allclose(logits, expected, atol=1e-5), \
                f"Net()(x) for x of shape {tuple(inputs.shape)} differs from FC2(sigmoid(FC1(x))) (raw logits, " \
                "no softmax: nn.CrossEntropyLoss applies it)"
