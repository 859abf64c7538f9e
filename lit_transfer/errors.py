"""Exception types the CLI prints as a single line, no traceback."""

from __future__ import annotations

import math

__all__ = ["TransferConfigError", "TrainingDiverged", "DIVERGED_EXIT_CODE"]

DIVERGED_EXIT_CODE = 3  # `lit-transfer fit` when training diverged (2: a bad config, file or data)


class TransferConfigError(ValueError):
    """A configuration, file or data problem the user can fix; the message names the problem and the fix."""


class TrainingDiverged(RuntimeError):
    """Training produced a non-finite loss (or non-finite weights): the run stops and is recorded as diverged.

    ``what`` says what was non-finite (``loss``, ``val_loss`` or ``weights``); ``loss`` is that loss at ``step``
    (``nan``/``inf``); ``names`` lists the non-finite parameters or validation metrics.
    """

    def __init__(self, step: int, epoch: int, loss: float | None, what: str = "loss", names: tuple[str, ...] = ()):
        self.step, self.epoch, self.loss, self.what, self.names = step, epoch, loss, what, tuple(names)
        if what == "loss":
            detail = f"non-finite loss ({loss}) at step {step} (epoch {epoch})"
        elif what == "val_loss":
            shown = ", ".join(self.names[:3])
            detail = f"non-finite validation loss ({loss}: {shown}) after step {step} (epoch {epoch})"
        else:
            shown = ", ".join(self.names[:3]) + (", ..." if len(self.names) > 3 else "")
            detail = f"non-finite weights after step {step} (epoch {epoch}): {shown}"
        super().__init__(f"training diverged: {detail}; lower model.lr, or clip gradients "
                         "(trainer.gradient_clip_val)")

    def record(self) -> dict:
        """What ``result.json`` keeps under ``divergence`` (non-finite numbers as strings: valid JSON)."""
        loss = self.loss
        if loss is not None and not math.isfinite(loss):
            loss = str(loss)
        return {"step": self.step, "epoch": self.epoch, "what": self.what, "loss": loss, "params": list(self.names)}
