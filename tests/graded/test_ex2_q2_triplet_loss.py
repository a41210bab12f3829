"""Ex2 Q2: ``TripletLoss`` against a brute-force loop over every (anchor, positive, negative), values and
gradients (the reference is differentiated by autograd in float64)."""

from __future__ import annotations

import math

import numpy as np
import torch

from autograder.engine import ProbeFailure
from autograder.reasons import probe_reason
from reference import triplet

from .checks import close


def reference(case: dict) -> tuple[float, torch.Tensor]:
    features = case["features"].double().clone().requires_grad_(True)
    loss = triplet.ReferenceTripletLoss(case["margin"], case["mining"], case["soft_margin"])(features, case["labels"])
    loss.backward()
    return loss.detach().item(), features.grad


def check_cases(run, kind: str, gradients: bool = False) -> None:
    results = run.probe("ex2_q2_cases")
    cases = run.inputs["cases"]
    assert isinstance(results, list) and len(results) == len(cases), "the loss was not computed on every case"
    chosen = [(index, case) for index, case in enumerate(cases) if kind in ("any", case["kind"])]
    for index, case in chosen:
        what = (f"TripletLoss(margin={case['margin']}, mining={case['mining']!r}"
                + (", soft_margin=True" if case["soft_margin"] else "") + f") on case {index} "
                f"({len(case['labels'])} embeddings, {len(set(case['labels'].tolist()))} identities)")
        result = results[index]
        if not result.get("ok"):
            raise ProbeFailure(f"{what}: " + probe_reason(result, run.limits))
        loss, grad = reference(case)
        if gradients:
            assert not result["grad_is_none"], f"{what}: no gradient reaches the embeddings"
            assert torch.isfinite(result["grad"]).all(), f"{what}: NaN or inf in the gradient"
            if not case["duplicate"]:  # two equal points tie distances: several gradients are then correct
                close(result["grad"], grad, f"{what}: gradient", atol=2e-4, rtol=1e-3)
        else:
            close(result["loss"], loss, what, atol=1e-4, rtol=1e-4)


def test_hand_made_triplets(run):
    """Hand-made cases on a line: max(0, m + d(a, p) - d(a, n)) with the hardest positive and negative"""
    check_cases(run, "hand")
    # By hand, points at 0, 1, 3, 3.5 on a line. Labels 0 0 1 1, margin 2.5: the four anchors' hinges are
    # 2.5 + 1 - 3, 2.5 + 1 - 2, 2.5 + 0.5 - 2, 2.5 + 0.5 - 2.5. Labels 0 1 0 1, margin 1: 1 + 3 - 1,
    # 1 + 2.5 - 1, 1 + 3 - 0.5, 1 + 2.5 - 0.5.
    results = run.probe("ex2_q2_cases")
    for index, expected in ((0, np.mean([0.5, 1.5, 1.0, 0.5])), (1, np.mean([3.0, 2.5, 3.5, 3.0]))):
        assert results[index].get("ok") and math.isclose(results[index]["loss"], expected, abs_tol=1e-5), \
            f"hand-made case {index}: expected {expected:.4f}"


def test_batch_hard(run):
    """mining="batch_hard": per anchor, the hardest positive and negative, averaged over anchors"""
    check_cases(run, "batch_hard")


def test_batch_all(run):
    """mining="batch_all": every valid triplet, averaged over those with a positive loss"""
    check_cases(run, "batch_all")


def test_semi_hard(run):
    """mining="semi_hard": per (anchor, positive), the nearest negative farther than the positive within the margin"""
    check_cases(run, "semi_hard")


def test_soft_margin(run):
    """soft_margin=True: softplus(d(a, p) - d(a, n)) instead of the hinge"""
    check_cases(run, "soft_margin")


def test_gradients_are_finite(run):
    """Gradients reach the embeddings, finite even with duplicated points, equal to the reference's"""
    check_cases(run, "any", gradients=True)
