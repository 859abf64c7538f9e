"""Knowledge distillation (Hinton et al., 2015) from a source-trained teacher into a target student.

The teacher is any lit_transfer run's checkpoint (any timm backbone + head): rebuilt as a
:class:`~lit_transfer.module.TransferClassifier` from the checkpoint's ``hyper_parameters`` and
``state_dict``, frozen and in eval mode for good. The student is the model (any backbone, possibly smaller).
Loss: ``ce_weight · CE(student, y)`` on the labelled target shots + ``kd_weight · T² · KL(teacher ‖ student)``
on all target images of the batch (labelled + unlabeled). ``teacher: null`` uses ``model.weights``.
Data: ``train_on: target`` (+ ``unlabeled_target: true``).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from lit_transfer.errors import TransferConfigError
from lit_transfer.strategies.objective import Frozen, Objective, kd_loss, labelled, unlabeled

__all__ = ["Distill", "load_classifier"]


def _head_from_state(state: dict) -> tuple[callable, int]:
    """The head class (with its shape arguments) and class count of a checkpoint's ``head.*`` weights."""
    from lit_transfer.models.heads import CosineHead, LinearHead, MLPHead

    if "head.log_scale" in state and "head.weight" in state:
        return CosineHead, int(state["head.weight"].shape[0])
    if "head.fc.weight" not in state:
        raise TransferConfigError("the teacher checkpoint has no head (head.fc.weight / head.weight)")
    n = int(state["head.fc.weight"].shape[0])
    linears = sorted(int(k.split(".")[2]) for k in state if k.startswith("head.mlp.") and k.endswith(".weight")
                     and state[k].ndim == 2)
    if not linears:
        return LinearHead, n
    hidden = [int(state[f"head.mlp.{i}.weight"].shape[0]) for i in linears]
    norm = any(k.startswith("head.mlp.") and state[k].ndim == 1 and k.endswith(".weight") for k in state)
    return functools.partial(MLPHead, hidden=hidden, norm=norm), n


def load_classifier(path: str) -> nn.Module:
    """A TransferClassifier rebuilt from a lit_transfer checkpoint (its backbone and head, nothing else)."""
    from lit_transfer.module import TransferClassifier

    path = Path(path).expanduser()
    if not path.is_file():
        raise TransferConfigError(f"teacher checkpoint not found: {path}")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    hp, state = ckpt.get("hyper_parameters", {}), ckpt.get("state_dict", {})
    if "backbone" not in hp or not any(k.startswith("backbone.model.") for k in state):
        raise TransferConfigError(f"{path} is not a lit_transfer run checkpoint (no hyper_parameters/backbone)")
    head, n = _head_from_state(state)
    model = TransferClassifier(backbone=hp["backbone"], weights=None, num_classes=n, in_chans=hp.get("in_chans", 3),
                               head=head)
    model.load_state_dict({k: v for k, v in state.items() if k.startswith(("backbone.", "head."))}, strict=True)
    return model


class Distill(Objective):
    requires = ("target",)

    def __init__(self, teacher: Optional[str] = None, temperature: float = 4.0, kd_weight: float = 1.0,
                 ce_weight: float = 1.0):
        super().__init__()
        self.teacher_path, self.temperature = teacher, temperature
        self.kd_weight, self.ce_weight = kd_weight, ce_weight

    def bind(self, model: nn.Module) -> None:
        path = self.teacher_path or model.hparams.weights
        if not path or not str(path).endswith(".ckpt"):
            raise TransferConfigError("Distill needs a teacher: a lit_transfer checkpoint in the objective's "
                                      "teacher, or in model.weights")
        teacher = load_classifier(str(path))
        if teacher.num_classes != model.num_classes or teacher.hparams.in_chans != model.hparams.in_chans:
            raise TransferConfigError(
                f"the teacher predicts {teacher.num_classes} classes from {teacher.hparams.in_chans} channels; the "
                f"student {model.num_classes} from {model.hparams.in_chans}: distillation needs the same label space"
            )
        self.teacher = Frozen(teacher)
        self.teacher_path = str(path)

    def training_step(self, model: nn.Module, batch):
        x, y = labelled(batch, "target")
        xu = unlabeled(batch)
        inputs = x if xu is None else torch.cat([x, xu])
        student = model(inputs)
        teacher = self.teacher(inputs)
        ce = model.task_loss(student[: len(x)], y)
        kd = kd_loss(student, teacher, self.temperature)
        return self.ce_weight * ce + self.kd_weight * kd, {"ce_loss": ce, "kd_loss": kd}
