"""Deep CORAL (Sun & Saenko, 2016): align the second-order statistics of source and target features.

``L_coral = ‖C_s − C_t‖²_F / (4 d²)`` with ``C`` the (unbiased) feature covariance and ``d`` the feature
width (after the model's bottleneck, if any); a loss term added with ``weight`` to the source cross-entropy.
Data: ``train_on: source`` + ``unlabeled_target``.
"""

from __future__ import annotations

import torch

from lit_transfer.strategies.objective import LossTerm, Step

__all__ = ["CORAL", "coral_loss"]


def _cov(x: torch.Tensor) -> torch.Tensor:
    x = x.float()
    centred = x - x.mean(0, keepdim=True)
    return centred.T @ centred / max(len(x) - 1, 1)


def coral_loss(fs: torch.Tensor, ft: torch.Tensor) -> torch.Tensor:
    d = fs.shape[1]
    return ((_cov(fs) - _cov(ft)) ** 2).sum() / (4 * d * d)


class CORAL(LossTerm):
    requires = ("source", "unlabeled")
    log_name = "coral_loss"

    def forward(self, step: Step):
        return coral_loss(step.features("source"), step.features("unlabeled"))
