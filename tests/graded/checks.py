"""Comparisons for the graded tests: every failure message is written here, in the grader's words, and
shows numbers only (never text the student's code produced)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch


def tensor(value: Any, what: str, shape: tuple[int, ...] | None = None) -> torch.Tensor:
    """``value`` as a float64 tensor of ``shape``, or an assertion naming ``what`` was wrong."""
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, (int, float)) for v in value):
        value = torch.tensor(value)
    assert torch.is_tensor(value), f"{what}: expected a tensor, got a {type(value).__name__}"
    if shape is not None:
        assert tuple(value.shape) == tuple(shape), f"{what}: shape {tuple(value.shape)}, expected {tuple(shape)}"
    return value.detach().to(torch.float64)


def number(value: Any, what: str) -> float:
    if torch.is_tensor(value) and value.numel() == 1:
        value = value.item()
    assert isinstance(value, (int, float)) and not isinstance(value, bool), \
        f"{what}: expected a number, got a {type(value).__name__}"
    return float(value)


def close(got: Any, expected: Any, what: str, atol: float = 1e-5, rtol: float = 1e-4) -> None:
    """``got`` equals ``expected`` (a number or a tensor) within tolerance; the message shows the worst entry."""
    if isinstance(expected, (int, float)):
        value = number(got, what)
        assert math.isfinite(value) and math.isclose(value, expected, rel_tol=rtol, abs_tol=atol), \
            f"{what}: got {value:.6g}, expected {expected:.6g}"
        return
    expected = torch.as_tensor(expected, dtype=torch.float64)
    got = tensor(got, what, tuple(expected.shape))
    difference = (got - expected).abs()
    bad = ~(difference <= atol + rtol * expected.abs())
    if bool(bad.any()):
        index = tuple(int(i) for i in np.unravel_index(int(torch.nan_to_num(difference, nan=math.inf).argmax()),
                                                        tuple(expected.shape))) if expected.dim() else ()
        assert False, (f"{what}: {int(bad.sum())} of {expected.numel()} values differ; at {list(index)} got "
                       f"{float(got[index]):.6g}, expected {float(expected[index]):.6g}")


def same_state(got: Any, expected: dict[str, torch.Tensor], what: str, atol: float = 1e-5) -> None:
    """A returned state dict equals ``expected`` key by key (floating tensors within ``atol``)."""
    assert isinstance(got, dict), f"{what}: expected a state dict, got a {type(got).__name__}"
    missing = sorted(set(expected) - set(got))
    assert not missing, f"{what}: {len(missing)} entries missing from the model's state"
    for key, value in expected.items():
        if value.is_floating_point():
            close(got[key], value, f"{what} [{key}]", atol=atol, rtol=1e-4)
        else:
            assert torch.equal(tensor(got[key], f"{what} [{key}]").long(), value.long()), f"{what} [{key}] differs"
