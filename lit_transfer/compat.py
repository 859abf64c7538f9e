"""Every use of a private member of Lightning or torch, in one place.

Private names change without deprecation. Each touch here is one small named function (or, for
``ModelCheckpoint``, one overridden method) with the reason it exists, and ``tests/test_compat.py`` holds one
test per touch that fails as soon as upstream renames or reshapes the member, instead of lit_transfer silently
falling back to slower or wrong behaviour. Nothing outside this module may name a ``_private`` member of
Lightning, torch or timm.

Checked against lightning 2.6, torch 2.9-2.14, timm 1.0.
"""

from __future__ import annotations

from typing import Any, Optional

from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn

__all__ = ["attached_trainer", "should_update_logs", "set_scheduler_last_lr", "is_compiled", "tensor_version",
           "NORM_LAYERS",
           "BATCH_NORM", "DROPOUT", "find_unused_parameters", "CheckpointHooks"]


def attached_trainer(module) -> Optional[Any]:
    """The trainer a LightningModule is attached to, or ``None``.

    The public ``module.trainer`` raises outside a fit when the module was never attached (``fabric`` runs,
    unit tests calling hooks directly); the code paths that also run without a trainer need ``None`` instead.
    """
    return getattr(module, "_trainer", None)


def should_update_logs(trainer) -> bool:
    """Whether this training step is one Lightning hands to the loggers (every ``log_every_n_steps``).

    Lightning decides it in its private logger connector; ``TransferClassifier.log`` skips recording step-only
    values on other steps (about a millisecond a call: more than a small model's whole CPU step).
    """
    connector = trainer._logger_connector
    return bool(connector.should_update_logs)


def set_scheduler_last_lr(scheduler, lrs: list[float]) -> None:
    """Set what ``scheduler.get_last_lr()`` reports after the group LRs were changed outside ``step()``.

    torch keeps it in ``_last_lr``; learning-rate monitors and chainable schedulers read it, so an LR rescaled
    by a fine-tuning phase (or re-based by ``InverseDecayLR.set_total_steps``) would otherwise be reported
    stale until the next ``step()``.
    """
    scheduler._last_lr = list(lrs)


def is_compiled(module: nn.Module) -> bool:
    """Whether ``module.compile()`` already ran (it sets ``_compiled_call_impl``; there is no public flag), so
    ``configure_model`` — called at every fit/validate/test start — compiles once."""
    return getattr(module, "_compiled_call_impl", None) is not None


def tensor_version(t) -> int:
    """A tensor's in-place modification counter (autograd's ``_version``; no public equivalent).

    The feature cache memoises weight digests per live tensor and re-hashes only when this changes: an
    optimizer step or ``load_state_dict`` bumps it, so a stale digest (hence stale cached features) is
    impossible without hashing every weight on every epoch.
    """
    return t._version


#: BatchNorm of every dimensionality (1d/2d/3d, SyncBatchNorm, lazy ones) share only the private base.
BATCH_NORM = nn.modules.batchnorm._BatchNorm
#: Normalisation layers whose running statistics / affine weights freezing must handle.
NORM_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)
#: Dropout of every dimensionality (Dropout, Dropout1d/2d/3d, AlphaDropout) share only the private base.
DROPOUT = nn.modules.dropout._DropoutNd


def find_unused_parameters(strategy) -> None:
    """Make a ``DDPStrategy`` wrap the model with ``find_unused_parameters=True``.

    A fine-tuning schedule unfreezes parameters after DDP wrapped the model; DDP all-reduces only the ones it
    saw trainable at wrap time, so the schedule wraps everything and lets DDP skip frozen ones. The strategy's
    constructor kwargs are private once the CLI has built it.
    """
    strategy._ddp_kwargs["find_unused_parameters"] = True


class CheckpointHooks(ModelCheckpoint):
    """``ModelCheckpoint`` with its private save steps re-exposed under public names.

    :class:`lit_transfer.checkpointing.Checkpoint` changes *when* ``last.ckpt`` is written and *how* (a hard
    link to a same-step best file). Lightning has no public hooks for either, so the private methods are
    overridden here, each only forwarding to a public method the subclass overrides.
    """

    # ----------------------------------------------------------------- read access to private state
    def skips_saving(self, trainer) -> bool:
        """Lightning's own reasons not to save now (sanity check, fast_dev_run, already saved this step)."""
        return self._should_skip_saving_checkpoint(trainer)

    def saves_on_train_epoch_end(self, trainer) -> bool:
        """Whether this callback's save points are train-epoch ends (else validation ends)."""
        return self._should_save_on_train_epoch_end(trainer)

    def monitor_candidates(self, trainer) -> dict:
        """The metrics a checkpoint file name and the top-k decision read."""
        return self._monitor_candidates(trainer)

    def mark_saved(self, trainer, filepath: str) -> None:
        """Record a save Lightning did not make itself (a linked ``last.ckpt``), so it is not repeated and
        resume metadata (``last_model_path``) stays right."""
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath

    # ------------------------------------------------------- overridden private steps → public hooks
    def _save_last_checkpoint(self, trainer, monitor_candidates) -> None:
        self.save_last_checkpoint(trainer, monitor_candidates)

    def _save_checkpoint(self, trainer, filepath: str) -> None:
        self.write_checkpoint(trainer, filepath)

    def save_last_checkpoint(self, trainer, monitor_candidates) -> None:
        """Write ``last.ckpt`` (Lightning's implementation)."""
        super()._save_last_checkpoint(trainer, monitor_candidates)

    def write_checkpoint(self, trainer, filepath: str) -> None:
        """Write one checkpoint file (Lightning's implementation)."""
        super()._save_checkpoint(trainer, filepath)

