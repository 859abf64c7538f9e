"""Label-free model-selection scores for unsupervised DA, computed on the target validation *images* only.

- ``im_score`` (information maximisation): ``H(mean p) − mean H(p)``: confident and class-diverse predictions.
- ``snd_score`` (soft neighborhood density, Saito et al., ICCV 2021): L2-normalised softmax outputs of the
  target val images, their cosine similarities (self-pairs excluded) scaled by ``1/τ`` (τ = 0.05) and
  softmax-normalised per row; the score is the mean entropy of those rows: high when predictions form dense
  neighbourhoods (clusters), low for a collapsed or scattered model.

Both are logged every validation epoch of an unsupervised-DA run (``target/val_im_score``, ``target/val_snd``)
and can select checkpoints (``model.selection: entropy`` or ``snd``).
"""

from __future__ import annotations

import torch

__all__ = ["im_score", "snd_score"]


def _entropy(p: torch.Tensor) -> torch.Tensor:
    return -(p * p.clamp_min(1e-12).log()).sum(-1)


def im_score(probs: torch.Tensor) -> torch.Tensor:
    probs = probs.float()
    return _entropy(probs.mean(0)) - _entropy(probs).mean()


def snd_score(probs: torch.Tensor, tau: float = 0.05, max_n: int = 2000) -> torch.Tensor:
    """Mean row entropy of the self-excluded, temperature-scaled similarity softmax (first ``max_n`` rows)."""
    p = torch.nn.functional.normalize(probs[:max_n].float(), dim=1)
    sim = p @ p.T
    sim.fill_diagonal_(float("-inf"))
    return _entropy(torch.softmax(sim / tau, dim=1)).mean()
