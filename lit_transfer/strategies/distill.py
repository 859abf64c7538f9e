"""Knowledge distillation (Hinton et al., 2015) from a source-trained teacher into a target student.

The teacher is any lit_transfer run's checkpoint (any timm backbone + head): a
:class:`~lit_transfer.models.source_checkpoint.SourceCheckpoint`, rebuilt as the model's own class
(``from_checkpoint``), frozen and in eval mode for good. The student is the model (any backbone, possibly
smaller). Loss: ``ce_weight · CE(student, y)`` on the labelled target shots + ``kd_weight · T² · KL(teacher ‖
student)`` on all target images of the batch (labelled + unlabeled). ``teacher: null`` uses the checkpoint the
model starts from (``model.weights``, read once by the model). Data: ``train_on: target`` (+ ``unlabeled_target: true``).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from lit_transfer.errors import TransferConfigError
from lit_transfer.models.source_checkpoint import SourceCheckpoint
from lit_transfer.plan.weights import File, parse_weights
from lit_transfer.strategies.objective import Frozen, Objective, kd_loss, labelled, unlabeled

__all__ = ["Distill"]


def teacher_checkpoint(teacher: Optional[str], checkpoint: Optional[SourceCheckpoint]) -> SourceCheckpoint:
    """The teacher's checkpoint: the objective's ``teacher`` file, else ``checkpoint``, the one the model starts
    from (read once, by the model)."""
    if teacher:
        weights = parse_weights(teacher)
        if isinstance(weights, File) and weights.is_checkpoint and not weights.path.is_file():
            raise TransferConfigError(f"teacher checkpoint not found: {weights.path}")
        if checkpoint is None or weights != File(checkpoint.path):
            checkpoint = SourceCheckpoint.read(weights)
    if checkpoint is None:
        raise TransferConfigError("Distill needs a teacher: a lit_transfer checkpoint in the objective's "
                                  "teacher, or in model.weights")
    return checkpoint


class Distill(Objective):
    requires = ("target",)

    def __init__(self, teacher: Optional[str] = None, temperature: float = 4.0, kd_weight: float = 1.0,
                 ce_weight: float = 1.0):
        super().__init__()
        self.teacher_path, self.temperature = teacher, temperature
        self.kd_weight, self.ce_weight = kd_weight, ce_weight

    def bind(self, model: nn.Module, checkpoint: Optional[SourceCheckpoint] = None) -> None:
        checkpoint = teacher_checkpoint(self.teacher_path, checkpoint)
        teacher = type(model).from_checkpoint(checkpoint)
        if teacher.num_classes != model.num_classes or teacher.hparams.in_chans != model.hparams.in_chans:
            raise TransferConfigError(
                f"the teacher predicts {teacher.num_classes} classes from {teacher.hparams.in_chans} channels; the "
                f"student {model.num_classes} from {model.hparams.in_chans}: distillation needs the same label space"
            )
        self.teacher = Frozen(teacher)
        self.teacher_path = str(checkpoint.path)

    def training_step(self, model: nn.Module, batch):
        x, y = labelled(batch, "target")
        xu = unlabeled(batch)
        inputs = x if xu is None else torch.cat([x, xu])
        student = model(inputs)
        teacher = self.teacher(inputs)
        ce = model.task_loss(student[: len(x)], y)
        kd = kd_loss(student, teacher, self.temperature)
        return self.ce_weight * ce + self.kd_weight * kd, {"ce_loss": ce, "kd_loss": kd}
