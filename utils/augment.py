"""Batched data augmentation as tensor ops: one call per batch, on whatever device the batch lives.

Per-sample PIL transforms cost more than the network itself on small images; these work on a whole
``(N, C, H, W)`` batch at once, on CPU or GPU, drawing randomness from an explicit generator.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_pad_crop(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Zero-pad each image by ``padding`` pixels and crop it back at a random offset (a random shift).

    Args:
        images: ``(N, C, H, W)``.
        padding: largest shift in pixels, in each direction.
        generator: CPU generator for the offsets (deterministic for a seed).
    """
    if padding <= 0:
        return images
    n, _, height, width = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    offsets = torch.randint(0, 2 * padding + 1, (2, n), generator=generator).to(images.device)
    rows = offsets[0, :, None] + torch.arange(height, device=images.device)
    cols = offsets[1, :, None] + torch.arange(width, device=images.device)
    batch = torch.arange(n, device=images.device)[:, None, None]
    # Advanced indexing on (N, H, W, C) gathers every image's own window in one op.
    cropped = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
    return cropped.permute(0, 3, 1, 2).contiguous()
