"""Step logging at Lightning's logging cadence: a ``LightningModule`` whose step-only values cost nothing between
logging steps."""

from __future__ import annotations

from lightning.pytorch import LightningModule

from lit_transfer import compat

__all__ = ["StepLogging"]


class StepLogging(LightningModule):
    """``LightningModule.log``, but step-only training values are recorded on logging steps only: Lightning
    hands them to loggers every ``log_every_n_steps`` anyway, and recording costs ~1 ms a call (more than a
    small model's CPU step). The progress bar shows the last recorded value, read when it redraws."""

    def log(self, name: str, value, *args, **kwargs) -> None:
        if kwargs.get("on_step") and not kwargs.get("on_epoch"):
            trainer = compat.attached_trainer(self)
            if trainer is not None and trainer.training and not compat.should_update_logs(trainer):
                return
        super().log(name, value, *args, **kwargs)
