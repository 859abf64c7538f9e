"""From a loaded dataset to the configured domain: its half, then channels, size and shifts."""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from .common import generator
from .registry import DOMAINS, Domain, DomainSpec
from .shifts import apply_shifts


def prepare(spec: DomainSpec, split_seed: int) -> Domain:
    """Load ``spec``'s dataset, keep its ``half``, convert channels, resize and apply its shifts (seeded by
    the split seed)."""
    domain = DOMAINS[spec.name].load(spec)
    skipped = domain.skipped
    if spec.half is not None:
        domain = take_half(domain, spec.half, split_seed)
    images = to_channels(domain.images, spec.channels)
    if spec.image_size is not None and images.shape[-2:] != (spec.image_size, spec.image_size):
        images = resize(images, spec.image_size)
    images = apply_shifts(images, spec.shifts, split_seed, spec.name)
    if skipped:  # the unreadable files left out (skip_corrupt: true), counted in result.json
        return dataclasses.replace(domain, images=images.contiguous(), skipped=skipped)
    return Domain(images.contiguous(), domain.labels, domain.official, origin=domain.origin,
                  converted=domain.converted)


def half_indices(labels: torch.Tensor, official: dict[str, torch.Tensor], half: int, split_seed: int) -> torch.Tensor:
    """Sorted indices of one of two disjoint halves: every class of every official split cut in two at random.

    Depends only on the labels, the official splits and ``split_seed`` (not on the dataset's name), so
    ``digits`` half 0 and ``digits_m`` half 1 are disjoint sets of the same underlying images.
    """
    parts = [official[k] for k in sorted(official)] or [torch.arange(len(labels))]
    keep = []
    for p, idx in enumerate(parts):
        idx = idx.sort().values
        for c in labels[idx].unique().tolist():
            members = idx[labels[idx] == c]
            order = members[torch.randperm(len(members), generator=generator(split_seed, "half", p, c))]
            cut = (len(order) + 1) // 2
            keep.append(order[:cut] if half == 0 else order[cut:])
    return torch.cat(keep).sort().values


def take_half(domain: Domain, half: int, split_seed: int) -> Domain:
    """The domain restricted to :func:`half_indices`, official splits renumbered, ``origin`` set."""
    idx = half_indices(domain.labels, domain.official, half, split_seed)
    position = torch.full((len(domain.labels),), -1, dtype=torch.long)
    position[idx] = torch.arange(len(idx))
    official = {k: position[v][position[v] >= 0] for k, v in domain.official.items()}
    return dataclasses.replace(domain, images=domain.images[idx], labels=domain.labels[idx], official=official,
                               origin=idx)


def to_channels(images: torch.Tensor, channels: int | None) -> torch.Tensor:
    """uint8 images with ``channels`` channels (1: PIL's luma, 3: gray repeated); ``None`` keeps them."""
    if channels is None or images.shape[1] == channels:
        return images
    if channels == 3:
        return images.expand(-1, 3, -1, -1)
    luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)  # PIL's convert("L")
    return (images.float() * luma).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 images resized to ``size`` x ``size`` (bilinear, antialiased), in chunks of 4096."""
    out = [F.interpolate(c.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
           for c in images.split(4096)]
    return torch.cat(out).round().clamp(0, 255).to(torch.uint8)
