"""``DivergenceGuard``: a run whose loss goes non-finite stops at once instead of "finishing" at chance accuracy.

Without it a too-high learning rate trains on NaN weights to the end, tests them, and writes an ``ok``
result at chance accuracy that a sweep averages into the comparison. The guard raises
:class:`~lit_transfer.errors.TrainingDiverged` at the first non-finite training loss, and at the end of
training if any weight is non-finite (a last step with non-finite gradients), and after a validation whose loss
is non-finite (finite but huge weights overflow the logits); the CLI then writes
``result.json`` with ``"status": "diverged"`` and exits with code 3.

Gradients are not checked on their own: a non-finite gradient makes the weights non-finite, which the next
step's loss (or the end-of-training check) reports, and under 16-bit mixed precision non-finite gradients
are expected: the grad scaler skips those steps.

Cost: on the CPU one comparison per step. On a GPU the check of step *k* is read at step *k + 1* (by then
that value is computed), so the guard never makes the host wait for the GPU's current step; a run stops one
step later, still reporting the first bad step. Under DDP every rank stops together (one all-reduce of a
flag per step).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from lit_transfer.errors import TrainingDiverged

__all__ = ["DivergenceGuard"]


class DivergenceGuard(Callback):
    def __init__(self) -> None:
        self._pending: Optional[tuple[int, int, torch.Tensor]] = None  # (step, epoch, loss) not yet checked

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if not isinstance(loss, torch.Tensor):
            return  # the step returned nothing: skipped
        previous, self._pending = self._pending, (trainer.global_step, trainer.current_epoch, loss.detach())
        if loss.device.type == "cpu":
            self._check(trainer)  # this step's loss: reading it costs nothing
        elif previous is not None:
            self._check(trainer, previous)  # the previous step's: already computed, no wait for this one

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._check(trainer)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Finite weights can still give non-finite outputs (huge weights overflow the logits): a NaN val loss
        # means the model under selection is broken. The logged values are already reduced over ranks.
        if trainer.sanity_checking:
            return
        bad = {k: float(v) for k, v in trainer.callback_metrics.items()
               if k.endswith("val_loss") and isinstance(v, torch.Tensor) and v.numel() == 1
               and not bool(torch.isfinite(v))}
        if bad:
            names = sorted(bad)
            raise TrainingDiverged(trainer.global_step, trainer.current_epoch, bad[names[0]], what="val_loss",
                                   names=names)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._check(trainer)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._check(trainer)
        bad = [name for name, p in pl_module.named_parameters()
               if p.is_floating_point() and not bool(torch.isfinite(p).all())]
        diverged = bool(bad)
        if trainer.world_size > 1:
            diverged = trainer.strategy.reduce_boolean_decision(diverged, all=False)
        if diverged:
            raise TrainingDiverged(trainer.global_step, trainer.current_epoch, None, what="weights",
                                   names=bad or ["(on another rank)"])

    def _check(self, trainer: Trainer, pending: Optional[tuple[int, int, torch.Tensor]] = None) -> None:
        if pending is None:
            pending, self._pending = self._pending, None
        if pending is None:
            return
        step, epoch, loss = pending
        bad = not bool(torch.isfinite(loss).all())
        if trainer.world_size > 1:
            bad = trainer.strategy.reduce_boolean_decision(bad, all=False)
        if bad:
            raise TrainingDiverged(step, epoch, float(loss.float().mean()) if loss.numel() else None)
