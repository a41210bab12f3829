"""Ex2 Q6: ``train(model, loader, criterion, optimizer, device)``, one epoch, against the same epoch done here
with the same stand-in network (batch norm on the embedding) and a stand-in of the given ``ReIDLoss``."""

from __future__ import annotations

import pytest
import torch

from autograder.child.doubles_reid import ProbeCriterion, TrainProbeNet
from reference import loops

from .checks import close, same_state


@pytest.fixture(scope="module")
def expected(run) -> tuple[dict, dict]:
    setting = run.inputs["train"]
    torch.manual_seed(setting["seed"])
    model = TrainProbeNet(setting["num_classes"], setting["feat_dim"])
    optimizer = torch.optim.SGD(model.parameters(), lr=setting["lr"], momentum=setting["momentum"])
    returned = loops.reid_epoch(model, setting["batches"], ProbeCriterion(), optimizer)
    return model.state_dict(), returned


def test_train_updates_the_weights(run, expected):
    """Weights after train(): one SGD step per batch on the criterion's total, in training mode"""
    value = run.probe("ex2_q6_train")
    batches = len(run.inputs["train"]["batches"])
    assert value["criterion_calls"] == batches, \
        f"the criterion was called {value['criterion_calls']} times for {batches} batches"
    same_state(value["state"], expected[0], f"weights after train() on {batches} batches")


def test_train_returns_the_mean_loss(run, expected):
    """train() returns {"loss": the mean of the batches' total loss, ...}"""
    returned = run.probe("ex2_q6_train")["returned"]
    assert "loss" in returned, "train() returned no 'loss'"
    close(returned["loss"], expected[1]["loss"], "train()['loss'] (mean total loss over the batches)", atol=1e-4)


def test_train_returns_the_accuracy(run, expected):
    """train() returns {"accuracy": the identity accuracy of the logits over the epoch, ...} in [0, 1]"""
    returned = run.probe("ex2_q6_train")["returned"]
    assert "accuracy" in returned, "train() returned no 'accuracy'"
    per_batch, per_image = expected[1]["accuracy"], expected[1]["accuracy_per_image"]
    got = returned["accuracy"]
    assert abs(got - per_batch) < 1e-5 or abs(got - per_image) < 1e-5, \
        f"train()['accuracy'] = {got:.4f}, expected {per_image:.4f} (over the images) or {per_batch:.4f} (per batch)"
