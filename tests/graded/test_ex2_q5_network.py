"""Ex2 Q5: ``ReIDNet`` = ResNet-50 without its classifier, FC1 (embedding), FC2 (identity logits), three outputs."""

from __future__ import annotations

import torch

from reference import models

from .checks import close, tensor

RESNET50_WITHOUT_FC = models.parameter_count(models.torchvision_resnet("resnet50")) - (2048 * 1000 + 1000)


def test_outputs_in_tp_order(run):
    """forward(x) returns (torch.cat([logits, features], 1), logits, features) with logits = FC2(features)"""
    value = run.probe("ex2_q5_outputs")
    setting = run.inputs["net"]
    classes, dim, batch = setting["num_classes"], setting["feat_dim"], len(run.inputs["x"])
    assert value["count"] == 3, f"forward returned {value['count']} output(s), expected 3 (concat, logits, features)"
    concat = tensor(value["outputs"][0], "the first output (the concatenation)", (batch, classes + dim))
    logits = tensor(value["outputs"][1], "the second output (logits)", (batch, classes))
    features = tensor(value["outputs"][2], "the third output (features)", (batch, dim))
    close(concat, torch.cat([logits, features], 1), "the first output vs torch.cat([logits, features], 1)", atol=1e-5)
    close(logits, value["fc2_of_features"], "logits vs FC2(features)", atol=1e-4)


def test_resnet50_backbone_and_heads(run):
    """The backbone is torchvision's ResNet-50 minus its fc; FC1: Linear(2048, feat_dim); FC2: Linear(feat_dim, C)"""
    value = run.probe("ex2_q5_structure")
    setting = run.inputs["net"]
    assert value["FC1"].get("type") == "Linear" and (value["FC1"].get("in"), value["FC1"].get("out")) == \
        (2048, setting["feat_dim"]), f"FC1 must start with Linear(2048, feat_dim={setting['feat_dim']})"
    assert value["FC2"].get("type") == "Linear" and (value["FC2"].get("in"), value["FC2"].get("out")) == \
        (setting["feat_dim"], setting["num_classes"]), \
        f"FC2 must be Linear(feat_dim={setting['feat_dim']}, num_classes={setting['num_classes']})"
    backbone = value["total"] - value["heads"]
    assert backbone == RESNET50_WITHOUT_FC, \
        f"the network has {backbone:,} parameters besides FC1 and FC2; ResNet-50 without its fc has {RESNET50_WITHOUT_FC:,}"


def test_every_parameter_used(run):
    """Every parameter (the embedding's batch norm included, if built) takes part in the forward pass"""
    value = run.probe("ex2_q5_gradients")
    unused = value["without_gradient"]
    assert not unused, f"{len(unused)} of {value['parameters']} parameter tensors get no gradient: built but never used"


def test_features_are_fc1_output(run):
    """The features output is FC1's output (the embedding), not the backbone's pooled vector"""
    value = run.probe("ex2_q5_outputs")
    assert "fc1_output" in value, "FC1 was not called during forward"
    close(value["outputs"][2], value["fc1_output"], "features vs FC1's output", atol=1e-5)
