"""How the pair's batches are served: the training streams (each seeded, combined into one loader), the
unlabeled stream's images-only loader, and how loaders hand batches to the training device."""

from __future__ import annotations

import torch
from lightning.pytorch.utilities import CombinedLoader

from .common import derive_seed
from .loader import InMemoryLoader


def rank_and_world_size(trainer) -> tuple[int, int]:
    """``(global rank, world size)`` of the trainer's process; ``(0, 1)`` without a trainer."""
    return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)


def transfer_options(trainer, prefetch: bool) -> dict:
    """How the loaders hand batches to the training device: pinned memory on CUDA; prefetched there if asked."""
    device = getattr(getattr(trainer, "strategy", None), "root_device", None) if trainer is not None else None
    accelerated = device is not None and device.type != "cpu"
    return {"pin_memory": accelerated and device.type == "cuda",
            "device": device if prefetch and accelerated else None}


def training_loader(streams: dict[str, tuple[torch.Tensor, torch.Tensor]], batch_size: int, seed: int, rank: int,
                    world_size: int, **transfer) -> InMemoryLoader | CombinedLoader:
    """One shuffled loader per ``{name: (images, labels)}`` stream; several are combined (``max_size_cycle``)
    into dict batches. The ``unlabeled`` stream yields images only."""
    first = next(iter(streams))
    loaders: dict = {}
    for name, (images, labels) in streams.items():
        # The first stream keeps the run's seed (single-stream order unchanged); others get their own.
        stream_seed = seed if name == first else derive_seed(seed, "stream", name)
        if name == "unlabeled":  # the labels never enter the loader: placeholders, dropped by ImagesOnly
            labels = torch.full((len(images),), -1, dtype=torch.int64)
        # Few-shot sets can be smaller than a batch: dropping the last batch would then drop everything.
        drop_last = -(-len(labels) // world_size) >= batch_size
        loader = InMemoryLoader(images, labels, batch_size, shuffle=True, drop_last=drop_last, seed=stream_seed,
                                rank=rank, world_size=world_size, **transfer)
        loaders[name] = ImagesOnly(loader) if name == "unlabeled" else loader
    if len(loaders) == 1:
        return loaders[first]
    return CombinedLoader(loaders, mode="max_size_cycle")


class ImagesOnly:
    """An :class:`InMemoryLoader` that yields images only: the unlabeled stream never carries labels."""

    def __init__(self, loader: InMemoryLoader) -> None:
        self.loader = loader
        self.sampler = loader.sampler  # Lightning calls sampler.set_epoch(epoch) on every training loader
        self.batch_sampler = None

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for images, _ in self.loader:
            yield images
