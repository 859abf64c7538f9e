"""MCC (Jin et al., 2020): minimum class confusion on the unlabeled target's predictions.

As TLlib's ``MinimumClassConfusionLoss`` (``tllib/self_training/mcc.py``): temperature-scaled softmax
``p = softmax(z / T)`` of a target batch; examples weighted by ``1 + exp(−H(p))`` (normalised to sum to the
batch size, detached); class confusion ``C = (p ⊙ w)ᵀ p``, each row normalised to sum 1; the loss is the
off-diagonal mass ``(Σ C − tr C) / K``. Added with ``weight`` to the task loss; composes with DANN/CDAN.
Data: ``unlabeled_target: true``.
"""

from __future__ import annotations

import torch

from lit_transfer.strategies.cdan import entropy
from lit_transfer.strategies.objective import LossTerm, Step

__all__ = ["MCC", "mcc_loss"]


def mcc_loss(logits: torch.Tensor, temperature: float = 2.5) -> torch.Tensor:
    n, k = logits.shape
    p = torch.softmax(logits.float() / temperature, dim=1)
    w = (1.0 + torch.exp(-entropy(p))).detach()
    w = (n * w / w.sum()).unsqueeze(1)
    confusion = (p * w).T @ p
    confusion = confusion / confusion.sum(dim=1, keepdim=True)
    # diagonal().sum(), not torch.trace: trace's backward reads its gradient back to the host (a sync per step)
    return (confusion.sum() - confusion.diagonal().sum()) / k


class MCC(LossTerm):
    requires = ("unlabeled",)
    log_name = "mcc_loss"

    def __init__(self, weight: float = 1.0, temperature: float = 2.5):
        super().__init__(weight)
        self.temperature = temperature

    def forward(self, step: Step):
        return mcc_loss(step.logits("unlabeled"), self.temperature)
