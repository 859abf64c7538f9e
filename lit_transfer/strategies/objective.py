"""Objectives: small loss modules composed with the model (``model.objective``), TLlib style.

An objective replaces the plain cross-entropy training step; everything else (optimizer, param groups,
metrics, checkpoints, selection, logging) stays the one :class:`~lit_transfer.module.TransferClassifier`
path::

    model:
      objective:
        class_path: lit_transfer.strategies.DANN
        init_args: {domain_weight: 1.0}

The contract:

- ``bind(model)`` is called once from the model's ``__init__`` (backbone built, transferred weights loaded):
  build modules that need the feature width (a discriminator) or snapshot the model (LwF). Modules stored
  on the objective are submodules of the model, so checkpoints carry them. Trainable ones go to the
  optimizer's ``extra`` group (the head's learning rate); frozen ones (``requires_grad=False``) stay out.
- ``check_data(model, datamodule)`` (optional) runs at fit start: fail early when a stream is missing.
- ``training_step(model, batch)`` returns the loss, or ``(loss, {name: value})``; the model logs
  ``train/loss`` and ``train/<name>``. ``batch`` is an ``(x, y)`` tuple for single-stream training, or a
  dict ``{"source": (x, y), "target": (x, y), "unlabeled": x}`` holding only the configured streams.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from lit_transfer.errors import TransferConfigError

__all__ = ["Objective", "Frozen", "labelled", "unlabeled", "kd_loss", "training_progress"]


class Objective(nn.Module):
    #: the training streams this objective needs (checked at fit start against the data module)
    requires: tuple[str, ...] = ()

    def bind(self, model: nn.Module) -> None:
        """Called once from the model's ``__init__``."""

    def check_data(self, model: nn.Module, datamodule) -> None:
        streams = getattr(datamodule, "train_streams", None)
        if streams is None:
            return
        missing = [s for s in self.requires if s not in streams]
        if missing:
            name = type(self).__name__
            hints = {"unlabeled": "data.unlabeled_target: true", "source": "data.train_on: source (or source+target)",
                     "target": "data.train_on: target (or source+target)"}
            raise TransferConfigError(
                f"{name} needs the {', '.join(missing)} training stream(s) but the data serves {streams}; set "
                + "; ".join(hints[m] for m in missing)
            )

    def training_step(self, model: nn.Module, batch):  # pragma: no cover - abstract
        raise NotImplementedError


class Frozen(nn.Module):
    """A module frozen for good: no gradients, eval mode forever (``model.train()`` cannot flip it back)."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module.requires_grad_(False)
        self.module.eval()
        self.training = False

    def train(self, mode: bool = True) -> "Frozen":
        return super().train(False)

    @torch.no_grad()
    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)


def labelled(batch, domain: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``(x, y)`` of a labelled stream (a single-stream batch is the trained domain's)."""
    if isinstance(batch, dict):
        if domain not in batch:
            raise TransferConfigError(f"the training batch has no '{domain}' stream (streams: {sorted(batch)})")
        return batch[domain]
    return batch


def unlabeled(batch) -> Optional[torch.Tensor]:
    """The unlabeled-target images of a batch, if the data module serves that stream."""
    return batch.get("unlabeled") if isinstance(batch, dict) else None


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton's distillation loss: ``T² · KL(softmax(t/T) ‖ softmax(s/T))``, averaged over the batch."""
    t = temperature
    log_p = torch.log_softmax(student_logits.float() / t, dim=-1)
    q = torch.softmax(teacher_logits.float() / t, dim=-1)
    return torch.nn.functional.kl_div(log_p, q, reduction="batchmean") * t * t


def training_progress(model: nn.Module) -> float:
    """``p`` in [0, 1]: ``global_step / estimated_stepping_batches`` (1.0 outside a fit)."""
    trainer = getattr(model, "_trainer", None)
    if trainer is None:
        return 1.0
    total = trainer.estimated_stepping_batches
    if not total or total == float("inf"):
        return 1.0
    return min(max(trainer.global_step / total, 0.0), 1.0)
