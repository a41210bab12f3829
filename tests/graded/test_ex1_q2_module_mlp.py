"""Ex1 Q2: ``Net`` (FC1, FC2), and the ``train``/``test`` functions, checked against one epoch done here."""

from __future__ import annotations

import torch

from autograder.child.doubles_mlp import TinyClassifier
from reference import loops

from .checks import close, same_state

MLP_PARAMETERS = 784 * 128 + 128 + 128 * 10 + 10


def test_net_has_fc1_and_fc2(run):
    """Net() has FC1 = Linear(784, 128) and FC2 = Linear(128, 10), and no other parameters"""
    value = run.probe("ex1_q2_net_layers")
    for name, (inputs, outputs) in (("FC1", (784, 128)), ("FC2", (128, 10))):
        layer = value.get(name, {})
        assert layer.get("type") == "Linear", f"Net().{name} is not an nn.Linear"
        assert (layer.get("in"), layer.get("out")) == (inputs, outputs), \
            f"Net().{name} is Linear({layer.get('in')}, {layer.get('out')}), expected Linear({inputs}, {outputs})"
    assert value["count"] == MLP_PARAMETERS, f"Net() has {value['count']} parameters, expected {MLP_PARAMETERS}"


def test_net_forward(run):
    """Net()(x) = FC2(sigmoid(FC1(x))) for (N, 1, 28, 28) and (N, 784) inputs, with weights set by the grader"""
    value = run.probe("ex1_q2_net_forward")
    weights, x = run.inputs["net"], run.inputs["x"].double()
    hidden = torch.sigmoid(x.reshape(len(x), -1) @ weights["fc1_w"].double().T + weights["fc1_b"].double())
    expected = hidden @ weights["fc2_w"].double().T + weights["fc2_b"].double()
    close(value["image"], expected, "Net()(x) on (N, 1, 28, 28) images", atol=1e-4)
    close(value["flat"], expected, "Net()(x) on (N, 784) vectors", atol=1e-4)


def test_train_runs_one_epoch_of_sgd(run):
    """train(model, device, loader, optimizer): one epoch of SGD in training mode, returns (mean loss, accuracy)"""
    value = run.probe("ex1_q2_train")
    setting = run.inputs["train"]
    torch.manual_seed(setting["seed"])
    model = TinyClassifier()
    optimizer = torch.optim.SGD(model.parameters(), lr=setting["lr"], momentum=setting["momentum"],
                                weight_decay=setting["weight_decay"])
    loss, accuracy = loops.sgd_epoch(model, setting["batches"], optimizer)
    same_state(value["state"], model.state_dict(), "weights after train() on 3 batches")
    returned = value["returned"]
    assert len(returned) == 2, f"train() returned {len(returned)} values, expected (mean loss, accuracy)"
    close(returned[0], loss, "train()'s mean loss over the epoch's samples", atol=1e-4)
    close(returned[1], accuracy, "train()'s accuracy (fraction of the epoch's samples)", atol=1e-6)


def test_test_evaluates_without_training(run):
    """test(model, device, loader): evaluation mode, no gradient step, returns (mean loss, accuracy)"""
    value = run.probe("ex1_q2_test")
    setting = run.inputs["test"]
    torch.manual_seed(setting["seed"])
    model = TinyClassifier()
    loss, accuracy = loops.eval_epoch(model, setting["batches"])
    same_state(value["state"], model.state_dict(), "the model after test() (it must not change)")
    returned = value["returned"]
    assert len(returned) == 2, f"test() returned {len(returned)} values, expected (mean loss, accuracy)"
    close(returned[0], loss, "test()'s mean loss over the samples (evaluation mode)", atol=1e-4)
    close(returned[1], accuracy, "test()'s accuracy", atol=1e-6)
