"""Batch-wise train-time augmentation on uint8 tensors, on whatever device the batch is on, seeded per step."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .common import derive_seed
from lit_transfer.errors import TransferConfigError

AUGMENTATIONS = ("hflip", "crop_padding")


def check_augment(augment: dict | None) -> None:
    unknown = set(augment or {}) - set(AUGMENTATIONS)
    if unknown:
        raise TransferConfigError(f"Unknown augment keys {sorted(unknown)}; known: {', '.join(AUGMENTATIONS)}.")


def augment_batch(
    images: torch.Tensor, gen: torch.Generator, hflip: bool = False, crop_padding: int = 0
) -> torch.Tensor:
    """Random horizontal flips and random crops from a zero-padded image (the CIFAR recipe)."""
    n, _, h, w = images.shape
    if crop_padding:
        p = crop_padding
        padded = F.pad(images, (p, p, p, p))
        dy, dx = (torch.randint(0, 2 * p + 1, (2, n), generator=gen, device=images.device))
        rows = (dy[:, None] + torch.arange(h, device=images.device))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w, device=images.device))[:, None, None, :]
        images = padded.gather(2, rows.expand(-1, padded.shape[1], -1, padded.shape[3]))
        images = images.gather(3, cols.expand(-1, images.shape[1], h, -1))
    if hflip:
        flip = torch.rand(n, generator=gen, device=images.device) < 0.5
        images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    return images


def augment_streams(batch, augment: dict, seed: int, step: int, rank: int):
    """A training batch augmented on its device, seeded by (seed, step, rank[, stream]), not by global RNG state:
    a resumed run augments the same way. Multi-stream batches: each stream with its own generator."""
    if isinstance(batch, dict):
        out = {}
        for name, part in batch.items():
            images = part if name == "unlabeled" else part[0]
            gen = torch.Generator(device=images.device)
            gen.manual_seed(derive_seed(seed, step, rank, name))
            images = augment_batch(images, gen, **augment)
            out[name] = images if name == "unlabeled" else (images, part[1])
        return out
    images, labels = batch
    gen = torch.Generator(device=images.device)
    gen.manual_seed(derive_seed(seed, step, rank))
    return augment_batch(images, gen, **augment), labels
