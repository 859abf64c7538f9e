"""Deep CORAL (Sun & Saenko, 2016): align the second-order statistics of source and target features.

``L_coral = ‖C_s − C_t‖²_F / (4 d²)`` with ``C`` the (unbiased) feature covariance and ``d`` the feature
width; added with ``weight`` to the source cross-entropy. Data: ``train_on: source`` + ``unlabeled_target``.
"""

from __future__ import annotations

import torch
from torch import nn

from lit_transfer.strategies.dann import embed_pair
from lit_transfer.strategies.objective import Objective, labelled, unlabeled

__all__ = ["CORAL", "coral_loss"]


def _cov(x: torch.Tensor) -> torch.Tensor:
    x = x.float()
    centred = x - x.mean(0, keepdim=True)
    return centred.T @ centred / max(len(x) - 1, 1)


def coral_loss(fs: torch.Tensor, ft: torch.Tensor) -> torch.Tensor:
    d = fs.shape[1]
    return ((_cov(fs) - _cov(ft)) ** 2).sum() / (4 * d * d)


class CORAL(Objective):
    requires = ("source", "unlabeled")

    def __init__(self, weight: float = 1.0):
        super().__init__()
        self.weight = weight

    def training_step(self, model: nn.Module, batch):
        xs, ys = labelled(batch, "source")
        fs, ft = embed_pair(model, xs, unlabeled(batch))
        cls = model.task_loss(model.head(fs), ys)
        align = coral_loss(fs, ft)
        return cls + self.weight * align, {"cls_loss": cls, "coral_loss": align}
