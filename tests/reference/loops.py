"""Reference for Ex1 Q2's train/test and Ex2 Q6's train(): one epoch as the TP writes it, run by the grader
(parent process only) on the same test doubles and inputs as the student's code."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def sgd_epoch(model: nn.Module, batches, optimizer, scheduler=None) -> tuple[float, float]:
    """What one epoch of the TP's training function does (used by the parent as the expected result)."""
    model.train()
    total_loss, correct, seen = 0.0, 0, 0
    for images, labels in batches:
        optimizer.zero_grad()
        output = model(images)
        loss = F.cross_entropy(output, labels)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total_loss += loss.item() * len(labels)
        correct += (output.argmax(1) == labels).sum().item()
        seen += len(labels)
    return total_loss / seen, correct / seen


@torch.no_grad()
def eval_epoch(model: nn.Module, batches) -> tuple[float, float]:
    model.eval()
    total_loss, correct, seen = 0.0, 0, 0
    for images, labels in batches:
        output = model(images)
        total_loss += F.cross_entropy(output, labels, reduction="sum").item()
        correct += (output.argmax(1) == labels).sum().item()
        seen += len(labels)
    return total_loss / seen, correct / seen


def reid_epoch(model: nn.Module, batches, criterion: nn.Module, optimizer) -> dict[str, float]:
    """What one epoch of the TP's ``train()`` does with these doubles (the parent's expected result)."""
    model.train()
    losses, accuracies, correct, seen = [], [], 0, 0
    for images, labels in batches:
        _, logits, features = model(images)
        loss, _ = criterion(logits, features, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        accuracies.append((logits.argmax(1) == labels).float().mean().item())
        correct += int((logits.argmax(1) == labels).sum())
        seen += len(labels)
    return {"loss": float(np.mean(losses)), "accuracy": float(np.mean(accuracies)), "accuracy_per_image": correct / seen}
