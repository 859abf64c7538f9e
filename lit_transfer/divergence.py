"""``DivergenceGuard``: a run whose loss goes non-finite stops instead of "finishing" at chance accuracy.

Without it a too-high learning rate trains on NaN weights to the end, tests them, and writes an ``ok``
result at chance accuracy that a sweep averages into the comparison. The guard raises
:class:`~lit_transfer.errors.TrainingDiverged` for the first non-finite training loss, at the end of training if
any weight is non-finite (a last step with non-finite gradients), and after a validation whose loss is
non-finite (finite but huge weights overflow the logits); the CLI then writes ``result.json`` with
``"status": "diverged"`` and exits with code 3.

**No host–device sync per step.** Each training step only updates an on-device record of the first bad step
(its global step and loss: a few tensor ops queued behind the step, never read). The host reads that record at
*check points* only: the steps Lightning writes logs on (every ``trainer.log_every_n_steps``, when it reads
the logged values anyway), before each validation, at each training epoch end and at the end of training.
So the CPU can run ahead of the accelerator between log intervals, and a diverged run stops at the next check
point, at most ``log_every_n_steps`` steps later, still reporting the *first* non-finite step and its loss.
With ``trainer.log_every_n_steps=0`` the check points are the epoch ends, validations and the end of training.

Gradients are not checked on their own: a non-finite gradient makes the weights non-finite, which the next
step's loss (or the end-of-training check) reports, and under 16-bit mixed precision non-finite gradients
are expected: the grad scaler skips those steps. Under DDP every rank stops together (one all-reduce of a flag
per check point; every rank has the same check points).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from lit_transfer import compat
from lit_transfer.errors import TrainingDiverged

__all__ = ["DivergenceGuard", "FirstBadStep"]


class FirstBadStep:
    """The first step whose loss was non-finite, recorded on the loss's device without reading it.

    ``update`` queues four small tensor ops (no host read, no host→device copy); ``read`` is the one
    device→host transfer, done at check points.
    """

    def __init__(self) -> None:
        self.step: Optional[torch.Tensor] = None  # int64 scalar, -1 while every loss was finite
        self.loss: Optional[torch.Tensor] = None  # float32 scalar: the first non-finite loss

    def update(self, loss: torch.Tensor, step: int) -> None:
        loss = loss.detach()
        if self.step is None or self.step.device != loss.device:
            self._place_on(loss.device)
        value = loss.float() if loss.numel() == 1 else loss.float().sum()  # a sum is non-finite if any term is
        first = torch.isfinite(value).logical_not_().logical_and_(self.step.lt(0))
        self.step = torch.where(first, step, self.step)
        self.loss = torch.where(first, value.reshape(()), self.loss)

    def _place_on(self, device: torch.device) -> None:
        if self.step is None:  # torch.full: a fill kernel, not a host→device copy
            self.step = torch.full((), -1, dtype=torch.int64, device=device)
            self.loss = torch.full((), 0.0, dtype=torch.float32, device=device)
        else:  # the loss moved device (rare): carry the record over
            self.step, self.loss = self.step.to(device), self.loss.to(device)

    def read(self) -> Optional[tuple[int, float]]:
        """``(step, loss)`` of the first non-finite loss, or ``None``; one device→host transfer."""
        if self.step is None:
            return None
        step, loss = torch.stack([self.step.double(), self.loss.double()]).tolist()
        return None if step < 0 else (int(step), loss)


class DivergenceGuard(Callback):
    def __init__(self) -> None:
        self.first_bad = FirstBadStep()

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if isinstance(loss, torch.Tensor):  # a step that returned nothing was skipped
            self.first_bad.update(loss, trainer.global_step)
        if compat.should_update_logs(trainer):  # a step whose logged values are read anyway
            self._check(trainer)

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._check(trainer)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Finite weights can still give non-finite outputs (huge weights overflow the logits): a NaN val loss
        # means the model under selection is broken. The logged values are already reduced over ranks.
        if trainer.sanity_checking:
            return
        losses = {k: v for k, v in trainer.callback_metrics.items()
                  if k.endswith("val_loss") and isinstance(v, torch.Tensor) and v.numel() == 1}
        if not losses:
            return
        names = sorted(losses)
        values = torch.stack([losses[k].detach().double().reshape(()) for k in names]).cpu().tolist()
        bad = {k: v for k, v in zip(names, values) if v != v or v in (float("inf"), float("-inf"))}
        if bad:
            names = sorted(bad)
            raise TrainingDiverged(trainer.global_step, trainer.current_epoch, bad[names[0]], what="val_loss",
                                   names=names)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._check(trainer)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._check(trainer)
        params = [(name, p) for name, p in pl_module.named_parameters() if p.is_floating_point()]
        finite = [torch.isfinite(p).all() for _, p in params]
        # one read for all parameters (per device); names only when something is wrong
        bad = [] if not finite or bool(torch.stack([f.to(finite[0].device) for f in finite]).all()) else [
            name for (name, _), f in zip(params, finite) if not bool(f)]
        diverged = bool(bad)
        if trainer.world_size > 1:
            diverged = trainer.strategy.reduce_boolean_decision(diverged, all=False)
        if diverged:
            raise TrainingDiverged(trainer.global_step, trainer.current_epoch, None, what="weights",
                                   names=bad or ["(on another rank)"])

    def _check(self, trainer: Trainer) -> None:
        found = self.first_bad.read()
        bad = found is not None
        if trainer.world_size > 1:
            bad = trainer.strategy.reduce_boolean_decision(bad, all=False)
        if bad:
            step, loss = found if found is not None else (trainer.global_step, float("nan"))
            # the epoch of the first bad step: every epoch end is a check point, so it is the current one
            raise TrainingDiverged(step, trainer.current_epoch, loss)
