"""Callbacks the Trainer calls for the model: what happens *around* training, not the model's own maths.

:class:`~lit_transfer.callbacks.feature_cache.FeatureCaching` and
:class:`~lit_transfer.callbacks.forgetting.ForgettingMeter` are returned by
``TransferClassifier.configure_callbacks()``, so every run has them without a CLI or config change (Lightning
appends model callbacks after the trainer's, i.e. after a ``FinetuningSchedule`` has set the epoch's frozen set).
Fine-tuning schedules (:mod:`lit_transfer.strategies.schedule`) are trainer callbacks chosen by the config.
"""

from lit_transfer.callbacks.feature_cache import FeatureCaching
from lit_transfer.callbacks.forgetting import ForgettingMeter

__all__ = ["FeatureCaching", "ForgettingMeter"]
