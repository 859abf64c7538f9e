"""Serve cached backbone embeddings instead of images while the whole backbone is a fixed function.

:mod:`lit_transfer.features` computes and stores the embeddings; this callback decides, at every epoch start,
whether the model's loaders may serve them (``InMemoryLoader.features``) or must go back to images.
"""

from __future__ import annotations

from typing import Optional

from lightning.pytorch import Callback

from lit_transfer import features
from lit_transfer.errors import TransferConfigError

__all__ = ["FeatureCaching", "feature_cache_active"]


def feature_cache_active(model, train: bool) -> bool:
    """Whether batches may be cached embeddings now: no backbone weight trains, and for training also no
    objective, no augmentation and a deterministic backbone (frozen BatchNorm statistics, no dropout).

    "No backbone weight trains", not "every layer group frozen": BitFit freezes every group but trains the
    biases, and the embeddings then change every step.
    """
    if model.bottleneck is not None:
        return False  # embed() includes the (trained) bottleneck: nothing fixed to cache
    if any(p.requires_grad for p in model.backbone.parameters()):
        return False
    if not train:
        return True  # eval mode: a frozen backbone is a fixed function
    dm = getattr(model.trainer, "datamodule", None)
    if model.objective is not None or getattr(dm, "augment", None):
        return False
    return features.backbone_is_deterministic(model.backbone)


class FeatureCaching(Callback):
    """At each train/val/test epoch start: cached embeddings if the backbone is fixed, else images.

    Its settings are its own: the CLI's ``feature_cache`` section (``--feature_cache.enabled false``, ...). A
    model run without one (a plain ``Trainer``) gets a default instance from its ``configure_callbacks``.

    Args:
        enabled: cache at all; off: always images.
        dtype: ``float32`` (exact) or ``float16`` (half the memory, rounded features).
        cache_dir: keep cached embeddings as ``.npy`` memory maps here (shared across processes); default: in
            memory, spilled to a temporary directory above ``memory_mb``.
        memory_mb: the in-memory cache's budget in MiB (process-wide, LRU).

    Runs after a ``FinetuningSchedule`` (model callbacks come after the trainer's), so it sees the epoch's
    frozen set.
    """

    def __init__(self, enabled: bool = True, dtype: str = "float32", cache_dir: Optional[str] = None,
                 memory_mb: float = features.DEFAULT_CACHE_MB):
        if dtype not in features.FEATURE_DTYPES:
            raise TransferConfigError(
                f"feature_cache.dtype must be one of {', '.join(features.FEATURE_DTYPES)}, got {dtype!r}")
        if not memory_mb > 0:
            raise TransferConfigError(f"feature_cache.memory_mb must be > 0, got {memory_mb}")
        self.enabled, self.dtype, self.cache_dir = enabled, dtype, cache_dir
        self.memory_mb = memory_mb

    def use_cached_features(self, model, trainer, loaders, train: bool) -> None:
        """Point ``InMemoryLoader``s at cached embeddings of their images (or back to the images)."""
        from lit_transfer.data.loader import InMemoryLoader

        loaders = [ld for ld in (loaders if isinstance(loaders, (list, tuple)) else [loaders])
                   if isinstance(ld, InMemoryLoader)]
        if not loaders:
            return
        active = self.enabled and feature_cache_active(model, train)
        cache = features.default_cache()
        if active:
            cache.set_budget(self.memory_mb)
        # cached features are computed exactly like the ones they replace: same autocast, same memory format
        context = trainer.precision_plugin.forward_context
        name = f"precision={trainer.precision}|channels_last={bool(model.hparams.get('channels_last'))}"
        dtype = features.FEATURE_DTYPES[self.dtype]
        for loader in loaders:
            loader.features = features.embeddings(
                model, loader.images, dtype=dtype, chunk=max(loader.batch_size, 256), cache=cache,
                forward_context=context, context=name, cache_dir=self.cache_dir,
            ) if active else None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.use_cached_features(pl_module, trainer, trainer.train_dataloader, train=True)

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self.use_cached_features(pl_module, trainer, trainer.val_dataloaders, train=False)

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self.use_cached_features(pl_module, trainer, trainer.test_dataloaders, train=False)
