"""CDAN (Long et al., 2018): conditional domain-adversarial loss, with entropy conditioning (CDAN+E).

As TLlib's ``ConditionalDomainAdversarialLoss`` (``tllib/alignment/cdan.py``): the discriminator sees the
multilinear map ``f ⊗ g`` of the features ``f`` and the (detached) softmax predictions ``g`` — flattened outer
product, or a randomized map ``(R_f f) ⊙ (R_g g) / √d`` of width ``randomized_dim`` when ``randomized`` — behind
a gradient-reversal layer on Ganin's λ schedule. With ``entropy_conditioning`` each example's BCE is weighted by
``1 + exp(−H(g))`` (normalised to mean 1): confident predictions count more. Term added with ``weight``.
Data: ``train_on: source`` + ``unlabeled_target: true``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lit_transfer.strategies.dann import DomainDiscriminator, domain_bce, ganin_coefficient, grad_reverse
from lit_transfer.strategies.objective import LossTerm, Step, training_progress

__all__ = ["CDAN", "multilinear_map", "entropy"]


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Per-row entropy of probability rows."""
    return -(probs * probs.clamp_min(1e-12).log()).sum(-1)


def multilinear_map(f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``[B, F] × [B, C] → [B, F·C]``: the flattened outer product per example."""
    return torch.bmm(g.unsqueeze(2), f.unsqueeze(1)).flatten(1)


class CDAN(LossTerm):
    requires = ("source", "unlabeled")
    log_name = "cdan_loss"

    def __init__(self, weight: float = 1.0, hidden: int = 1024, norm: str = "dropout", entropy_conditioning: bool = True,
                 randomized: bool = False, randomized_dim: int = 1024, gamma: float = 10.0, max_coeff: float = 1.0):
        super().__init__(weight)
        self.hidden, self.norm, self.entropy_conditioning = hidden, norm, entropy_conditioning
        self.randomized, self.randomized_dim, self.gamma, self.max_coeff = randomized, randomized_dim, gamma, max_coeff

    def bind(self, model: nn.Module, checkpoint=None) -> None:
        f, c = model.feature_dim, model.num_classes
        if self.randomized:
            # Fixed random projections (buffers: checkpointed, never trained).
            self.register_buffer("rf", torch.randn(f, self.randomized_dim))
            self.register_buffer("rg", torch.randn(c, self.randomized_dim))
            width = self.randomized_dim
        else:
            width = f * c
        self.discriminator = DomainDiscriminator(width, self.hidden, self.norm)

    def conditioned(self, f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        if self.randomized:
            return (f @ self.rf) * (g @ self.rg) / float(self.randomized_dim) ** 0.5
        return multilinear_map(f, g)

    def forward(self, step: Step):
        fs, ft = step.features("source"), step.features("unlabeled")
        g = torch.cat([step.logits("source"), step.logits("unlabeled")]).float().softmax(-1).detach()
        f = torch.cat([fs, ft]).float()
        coeff = ganin_coefficient(training_progress(step.model), self.gamma, self.max_coeff)
        logits = self.discriminator(grad_reverse(self.conditioned(f, g), coeff)).squeeze(-1)
        weight = None
        if self.entropy_conditioning:
            w = 1.0 + torch.exp(-entropy(g))
            weight = w / w.sum() * len(w)
        loss, acc = domain_bce(logits, len(fs), weight)
        return loss, {"domain_acc": acc, "grl_coeff": coeff}
