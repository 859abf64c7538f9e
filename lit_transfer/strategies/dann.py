"""DANN (Ganin & Lempitsky, 2015): domain-adversarial training with a gradient-reversal layer.

A discriminator learns to tell source features from unlabeled-target features; the gradient-reversal
layer (identity forward, ``-λ ×`` gradient backward) makes the backbone learn features it cannot tell
apart. ``λ`` warms up on Ganin's schedule ``λ(p) = max_coeff · (2 / (1 + exp(-γ p)) - 1)`` with
``p = global_step / estimated_stepping_batches``. Loss: source cross-entropy + ``domain_weight`` × domain BCE.
Data: ``train_on: source`` + ``unlabeled_target: true`` (the training step never sees target labels).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lit_transfer.strategies.objective import Objective, labelled, training_progress, unlabeled

__all__ = ["DANN", "GradientReversal", "grad_reverse", "ganin_coefficient", "DomainDiscriminator"]


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


class DomainDiscriminator(nn.Sequential):
    """Features → one logit (source = 1, target = 0)."""

    def __init__(self, in_features: int, hidden: int = 256):
        super().__init__(
            nn.Linear(in_features, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, 1),
        )


def embed_pair(model: nn.Module, xs: torch.Tensor, xt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Features of source and target images: one forward when the shapes allow (shared BatchNorm batch)."""
    if xs.shape[1:] == xt.shape[1:]:
        f = model.embed(torch.cat([xs, xt]))
        return f[: len(xs)], f[len(xs) :]
    return model.embed(xs), model.embed(xt)


class DANN(Objective):
    requires = ("source", "unlabeled")

    def __init__(self, domain_weight: float = 1.0, hidden: int = 256, gamma: float = 10.0, max_coeff: float = 1.0):
        super().__init__()
        self.domain_weight, self.hidden, self.gamma, self.max_coeff = domain_weight, hidden, gamma, max_coeff
        self.last_coeff = 0.0

    def bind(self, model: nn.Module) -> None:
        self.discriminator = DomainDiscriminator(model.backbone.out_features, self.hidden)

    def coefficient(self, model: nn.Module) -> float:
        return ganin_coefficient(training_progress(model), self.gamma, self.max_coeff)

    def domain_loss(self, fs: torch.Tensor, ft: torch.Tensor, coeff: float) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.discriminator(grad_reverse(torch.cat([fs, ft]), coeff)).squeeze(-1).float()
        labels = torch.cat([torch.ones(len(fs)), torch.zeros(len(ft))]).to(logits.device)
        loss = F.binary_cross_entropy_with_logits(logits, labels)
        acc = ((logits > 0).float() == labels).float().mean()
        return loss, acc

    def training_step(self, model: nn.Module, batch):
        xs, ys = labelled(batch, "source")
        xt = unlabeled(batch)
        fs, ft = embed_pair(model, xs, xt)
        cls = model.task_loss(model.head(fs), ys)
        coeff = self.last_coeff = self.coefficient(model)
        dom, acc = self.domain_loss(fs, ft, coeff)
        loss = cls + self.domain_weight * dom
        return loss, {"cls_loss": cls, "domain_loss": dom, "domain_acc": acc, "grl_coeff": coeff}
