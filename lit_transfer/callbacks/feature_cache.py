"""Serve cached backbone embeddings instead of images while the whole backbone is a fixed function.

:mod:`lit_transfer.features` computes and stores the embeddings; this callback decides, at every epoch start,
whether the model's loaders may serve them (``InMemoryLoader.features``) or must go back to images.
"""

from __future__ import annotations

from lightning.pytorch import Callback

from lit_transfer import features

__all__ = ["FeatureCaching", "feature_cache_active"]


def feature_cache_active(model, train: bool) -> bool:
    """Whether batches may be cached embeddings now: no backbone weight trains, and for training also no
    objective, no augmentation and a deterministic backbone (frozen BatchNorm statistics, no dropout).

    "No backbone weight trains", not "every layer group frozen": BitFit freezes every group but trains the
    biases, and the embeddings then change every step.
    """
    if not model.hparams.get("feature_cache", False) or model.bottleneck is not None:
        return False  # embed() includes the (trained) bottleneck: nothing fixed to cache
    if any(p.requires_grad for p in model.backbone.parameters()):
        return False
    if not train:
        return True  # eval mode: a frozen backbone is a fixed function
    dm = getattr(model.trainer, "datamodule", None)
    if model.objective is not None or getattr(dm, "augment", None):
        return False
    return features.backbone_is_deterministic(model.backbone)


def use_cached_features(model, trainer, loaders, train: bool) -> None:
    """Point ``InMemoryLoader``s at cached embeddings of their images (or back to the images)."""
    from lit_transfer.data.loader import InMemoryLoader

    loaders = [ld for ld in (loaders if isinstance(loaders, (list, tuple)) else [loaders])
               if isinstance(ld, InMemoryLoader)]
    if not loaders:
        return
    active = feature_cache_active(model, train)
    hp = model.hparams
    cache = features.default_cache()
    if active:
        cache.set_budget(hp.get("feature_cache_mb", features.DEFAULT_CACHE_MB))
    # cached features are computed exactly like the ones they replace: same autocast, same memory format
    context = trainer.precision_plugin.forward_context
    name = f"precision={trainer.precision}|channels_last={hp.get('channels_last', False)}"
    dtype = features.FEATURE_DTYPES[hp.get("feature_cache_dtype", "float32")]
    for loader in loaders:
        loader.features = features.embeddings(
            model, loader.images, dtype=dtype, chunk=max(loader.batch_size, 256), cache=cache,
            forward_context=context, context=name, cache_dir=hp.get("feature_cache_dir"),
        ) if active else None


class FeatureCaching(Callback):
    """At each train/val/test epoch start: cached embeddings if the backbone is fixed, else images.

    Runs after a ``FinetuningSchedule`` (model callbacks come after the trainer's), so it sees the epoch's
    frozen set.
    """

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        use_cached_features(pl_module, trainer, trainer.train_dataloader, train=True)

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        use_cached_features(pl_module, trainer, trainer.val_dataloaders, train=False)

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        use_cached_features(pl_module, trainer, trainer.test_dataloaders, train=False)
