"""MMD alignment (DAN, Long et al., 2015): multi-kernel Gaussian maximum mean discrepancy of the features.

``MMD² = E k(s, s') + E k(t, t') − 2 E k(s, t)`` (biased estimator, ≥ 0, zero for identical samples) with
``k`` the mean of Gaussian kernels ``exp(−‖a − b‖² / (2σ²))``. The ``σ²`` are ``bandwidths`` when given, else
``multipliers`` × the mean pairwise squared distance of the batch (detached). Data: ``train_on: source`` +
``unlabeled_target: true``.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from lit_transfer.strategies.objective import LossTerm, Step

__all__ = ["MMD", "mk_mmd"]


def mk_mmd(fs: torch.Tensor, ft: torch.Tensor, multipliers: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0),
           bandwidths: Optional[Sequence[float]] = None) -> torch.Tensor:
    x = torch.cat([fs, ft]).float()
    sq = (x * x).sum(1)
    d2 = (sq[:, None] + sq[None, :] - 2 * x @ x.T).clamp_min(0)
    n = len(x)
    if bandwidths is None:
        base = d2.detach().sum() / max(n * n - n, 1)
        sigma2 = [base.clamp_min(1e-8) * m for m in multipliers]
    else:
        sigma2 = list(bandwidths)
    k = sum(torch.exp(-d2 / (2 * s)) for s in sigma2) / len(sigma2)
    ns = len(fs)
    return k[:ns, :ns].mean() + k[ns:, ns:].mean() - 2 * k[:ns, ns:].mean()


class MMD(LossTerm):
    requires = ("source", "unlabeled")
    log_name = "mmd_loss"

    def __init__(self, weight: float = 1.0, multipliers: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0),
                 bandwidths: Optional[Sequence[float]] = None):
        super().__init__(weight)
        self.multipliers, self.bandwidths = tuple(multipliers), bandwidths

    def forward(self, step: Step):
        return mk_mmd(step.features("source"), step.features("unlabeled"), self.multipliers, self.bandwidths)
