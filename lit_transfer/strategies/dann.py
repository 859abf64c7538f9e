"""DANN (Ganin & Lempitsky, 2015; Ganin et al., 2016): domain-adversarial training with a gradient-reversal layer.

A loss term (:class:`~lit_transfer.strategies.objective.LossTerm`) over the step's features, as TLlib's
``DomainAdversarialLoss`` (``tllib/alignment/dann.py``): a discriminator learns to tell source features from
unlabeled-target features; the gradient-reversal layer (identity forward, ``-λ ×`` gradient backward) makes the
feature extractor learn features it cannot tell apart. ``λ`` warms up on Ganin's schedule
``λ(p) = max_coeff · (2 / (1 + exp(-γ p)) - 1)`` with ``p = global_step / estimated_stepping_batches``.
Term: ``(BCE(D(f_s), 1) + BCE(D(f_t), 0)) / 2``, added with ``weight`` to the source cross-entropy.
Discriminator as in the papers / TLlib: ``in → hidden → hidden → 1`` with BatchNorm (``norm: batch``) or
dropout 0.5 (``norm: dropout``) after each hidden ReLU.
Data: ``train_on: source`` + ``unlabeled_target: true`` (the training step never sees target labels).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lit_transfer.errors import TransferConfigError
from lit_transfer.strategies.objective import LossTerm, Step, training_progress

__all__ = ["DANN", "GradientReversal", "grad_reverse", "ganin_coefficient", "DomainDiscriminator", "embed_pair"]


class GradientReversal(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, coeff: float) -> torch.Tensor:
        ctx.coeff = coeff
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.coeff * grad, None


def grad_reverse(x: torch.Tensor, coeff: float = 1.0) -> torch.Tensor:
    return GradientReversal.apply(x, coeff)


def ganin_coefficient(progress: float, gamma: float = 10.0, max_coeff: float = 1.0) -> float:
    return max_coeff * (2.0 / (1.0 + math.exp(-gamma * progress)) - 1.0)


NORMS = ("batch", "dropout", "none")


class DomainDiscriminator(nn.Sequential):
    """Features → one logit (source = 1, target = 0): two hidden layers, each ReLU + BatchNorm or dropout 0.5."""

    def __init__(self, in_features: int, hidden: int = 1024, norm: str = "dropout", dropout: float = 0.5):
        if norm not in NORMS:
            raise TransferConfigError(f"discriminator norm must be one of {', '.join(NORMS)}, got {norm!r}")
        layers: list[nn.Module] = []
        for width_in in (in_features, hidden):
            layers.append(nn.Linear(width_in, hidden))
            if norm == "batch":
                layers += [nn.BatchNorm1d(hidden), nn.ReLU(inplace=True)]
            else:
                layers += [nn.ReLU(inplace=True), nn.Dropout(dropout if norm == "dropout" else 0.0)]
        layers.append(nn.Linear(hidden, 1))
        super().__init__(*layers)


def embed_pair(model: nn.Module, xs: torch.Tensor, xt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Features of source and target images: one forward when the shapes allow (shared BatchNorm batch)."""
    if xs.shape[1:] == xt.shape[1:]:
        f = model.embed(torch.cat([xs, xt]))
        return f[: len(xs)], f[len(xs) :]
    return model.embed(xs), model.embed(xt)


def domain_bce(logits: torch.Tensor, n_source: int, weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of the per-domain BCEs (source = 1, target = 0) of ``[n_s + n_t]`` logits, and the accuracy."""
    logits = logits.float()
    labels = torch.zeros_like(logits)
    labels[:n_source] = 1.0
    per = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    if weight is not None:
        per = per * weight
    loss = 0.5 * (per[:n_source].mean() + per[n_source:].mean())
    acc = ((logits > 0).float() == labels).float().mean()
    return loss, acc


class DANN(LossTerm):
    """Domain-adversarial loss term. ``weight``: trade-off against the source cross-entropy."""

    requires = ("source", "unlabeled")
    log_name = "domain_loss"

    def __init__(self, weight: float = 1.0, hidden: int = 1024, norm: str = "dropout", gamma: float = 10.0,
                 max_coeff: float = 1.0):
        super().__init__(weight)
        if norm not in NORMS:
            raise TransferConfigError(f"DANN norm must be one of {', '.join(NORMS)}, got {norm!r}")
        self.hidden, self.norm, self.gamma, self.max_coeff = hidden, norm, gamma, max_coeff
        self.last_coeff = 0.0

    def bind(self, model: nn.Module, checkpoint=None) -> None:
        self.discriminator = DomainDiscriminator(model.feature_dim, self.hidden, self.norm)

    def coefficient(self, model: nn.Module) -> float:
        return ganin_coefficient(training_progress(model), self.gamma, self.max_coeff)

    def domain_loss(self, fs: torch.Tensor, ft: torch.Tensor, coeff: float) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.discriminator(grad_reverse(torch.cat([fs, ft]), coeff)).squeeze(-1)
        return domain_bce(logits, len(fs))

    def forward(self, step: Step):
        coeff = self.last_coeff = self.coefficient(step.model)
        loss, acc = self.domain_loss(step.features("source"), step.features("unlabeled"), coeff)
        return loss, {"domain_acc": acc, "grl_coeff": coeff}
