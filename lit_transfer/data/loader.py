"""``InMemoryLoader``: batches by indexing in-memory tensors, deterministic per (seed, epoch), DDP-sharded."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

from .common import generator


class EpochSampler:
    """Holds the epoch; Lightning calls ``dataloader.sampler.set_epoch(epoch)`` at the start of each one."""

    def __init__(self) -> None:
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch


class InMemoryLoader:
    """Yields ``(images, labels)`` batches of in-memory tensors without per-sample Python.

    The shuffle order depends only on ``(seed, epoch)``, so a resumed run replays the batches of an
    uninterrupted one. With ``world_size > 1`` every rank draws the same order, pads it to a multiple of
    ``world_size`` (repeating from the start, like ``DistributedSampler``) and keeps ``order[rank::world_size]``,
    so all ranks run the same number of steps.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        shuffle: bool,
        drop_last: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if len(images) != len(labels):
            raise ValueError(f"images ({len(images)}) and labels ({len(labels)}) differ in length.")
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.sampler = EpochSampler()
        self.batch_sampler = None  # Lightning inspects DataLoader-like attributes; batching is ours
        # Cached embeddings [N, D] of ``images`` (lit_transfer.features): when set, batches carry these rows
        # instead of the images, in the same order. Read when an epoch's iteration starts.
        self.features: torch.Tensor | None = None

    def _indices(self) -> torch.Tensor | None:
        """This rank's sample order, or None for "all samples in order" (served as cheap slices)."""
        n = len(self.labels)
        if not self.shuffle and self.world_size == 1:
            return None
        if self.shuffle:
            order = torch.randperm(n, generator=generator(self.seed, self.sampler.epoch))
        else:
            order = torch.arange(n)
        padded = math.ceil(n / self.world_size) * self.world_size
        if padded > n > 0:
            order = torch.cat([order, order.repeat(math.ceil(padded / n))[: padded - n]])
        return order[self.rank :: self.world_size]

    def _num_samples(self) -> int:
        return math.ceil(len(self.labels) / self.world_size)

    def __len__(self) -> int:
        n = self._num_samples()
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self._indices()
        data = self.images if self.features is None else self.features
        for b in range(len(self)):
            lo, hi = b * self.batch_size, (b + 1) * self.batch_size
            if order is None:
                yield data[lo:hi], self.labels[lo:hi]
            else:
                idx = order[lo:hi]
                yield data[idx], self.labels[idx]
