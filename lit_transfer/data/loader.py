"""``InMemoryLoader``: batches by indexing in-memory tensors, deterministic per (seed, epoch), DDP-sharded.

Batches stay uint8 on the host (4× less to copy than float32); the model normalises them on its device
(:meth:`~lit_transfer.module.TransferClassifier.preprocess`). When training runs on CUDA, batches are gathered
straight into pinned (page-locked) memory, so Lightning's ``non_blocking`` transfer really is asynchronous: the
host queues the copy and moves on. With ``device`` set (``data.prefetch``), the loader itself copies batch
*k + 1* to the device, on a side CUDA stream, before it hands out batch *k*: the copy overlaps the step.
"""

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
        pin_memory: bool = False,
        device: torch.device | str | None = None,
    ) -> None:
        if len(images) != len(labels):
            raise ValueError(f"images ({len(images)}) and labels ({len(labels)}) differ in length.")
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.seed, self.rank, self.world_size = seed, rank, world_size
        # pinned batches need CUDA; prefetching copies each batch to ``device`` one batch ahead
        self.pin_memory, self.device = pin_memory, None if device is None else torch.device(device)
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

    def _batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self._indices()
        data = self.images if self.features is None else self.features
        for b in range(len(self)):
            lo, hi = b * self.batch_size, (b + 1) * self.batch_size
            if not self.pin_memory:
                if order is None:
                    yield data[lo:hi], self.labels[lo:hi]
                else:
                    idx = order[lo:hi]
                    yield data[idx], self.labels[idx]
            else:  # gathered straight into page-locked memory: one copy, and an asynchronous transfer
                idx = torch.arange(lo, min(hi, len(self.labels))) if order is None else order[lo:hi]
                yield tuple(torch.index_select(t, 0, idx, out=torch.empty((len(idx), *t.shape[1:]), dtype=t.dtype,
                                                                          pin_memory=True))
                            for t in (data, self.labels))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.device is None:
            yield from self._batches()
            return
        yield from prefetched(self._batches(), self.device)


def prefetched(batches, device: torch.device):
    """``batches`` moved to ``device``, each one issued before the previous one is handed out (on CUDA on a
    side stream that the consumer's stream waits for; pinned sources make the copies asynchronous)."""
    cuda = device.type == "cuda"
    stream = torch.cuda.Stream(device) if cuda else None

    def issue(batch):
        if not cuda:
            return tuple(t.to(device) for t in batch)
        with torch.cuda.stream(stream):
            return tuple(t.to(device, non_blocking=True) for t in batch)

    pending = None
    for batch in batches:
        nxt = issue(batch)
        if pending is not None:
            yield _ready(pending, stream, device)
        pending = nxt
    if pending is not None:
        yield _ready(pending, stream, device)


def _ready(batch, stream, device):
    if stream is not None:
        current = torch.cuda.current_stream(device)
        current.wait_stream(stream)  # queued on the device: the host does not wait
        for t in batch:
            t.record_stream(current)  # its memory is not reused before the consumer's kernels ran
    return batch
