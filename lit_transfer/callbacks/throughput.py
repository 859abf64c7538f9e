"""Training throughput: labelled images per second of training, validation time left out."""

from __future__ import annotations

import time

from lightning.pytorch import Callback

__all__ = ["Throughput"]


def _batch_images(batch) -> int:
    """Images in a training batch: an ``(x, y)`` tuple, or a dict of streams (every stream's images count)."""
    if isinstance(batch, dict):
        return sum(_batch_images(part) for part in batch.values())
    if isinstance(batch, (list, tuple)):
        batch = batch[0]
    return int(batch.shape[0]) if hasattr(batch, "shape") and len(batch.shape) >= 1 else 0


class Throughput(Callback):
    """Counts training images (shapes only: no device sync) and the wall time of training minus validation.

    ``summary()`` goes into ``result.json`` as ``train_images_per_s`` and ``train_time_s``: the report's
    "images/s" column, which says what a row cost apart from data loading, testing and waiting.
    """

    def __init__(self) -> None:
        self.images = 0
        self.seconds = 0.0
        self._started: float | None = None
        self._val_started: float | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        self._started = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.images += _batch_images(batch)

    def on_validation_start(self, trainer, pl_module) -> None:
        if self._started is not None and not trainer.sanity_checking:
            self._val_started = time.perf_counter()

    def on_validation_end(self, trainer, pl_module) -> None:
        if self._val_started is not None and self._started is not None:
            self._started += time.perf_counter() - self._val_started  # validation time is not training time
        self._val_started = None

    def on_train_end(self, trainer, pl_module) -> None:
        if self._started is not None:
            self.seconds += time.perf_counter() - self._started
            self._started = None

    def summary(self) -> dict:
        if not self.images or self.seconds <= 0:
            return {}
        return {"train_images_per_s": round(self.images / self.seconds, 1), "train_time_s": round(self.seconds, 3)}
