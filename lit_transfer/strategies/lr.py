"""Learning rates annealed over the whole budget in optimizer steps, whatever the epoch length.

The annealed learning rate of DANN/CDAN/MCC (Ganin & Lempitsky, 2015): ``μ_p = μ0 / (1 + α p)^β``.

``p`` goes linearly from 0 to 1 over training (``global_step / estimated_stepping_batches``); α = 10,
β = 0.75 in the papers and TLlib (here ``rate`` = α and ``power`` = β: ``alpha`` is taken by the config
check of RMSprop's smoothing constant). Stepped every optimizer step. Use it from YAML::

    model:
      lr_scheduler:
        class_path: lit_transfer.strategies.InverseDecayLR
        init_args: {rate: 10.0, power: 0.75}

``total_steps`` is filled in by the model from the trainer when left ``None``.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch.optim.lr_scheduler import LambdaLR

from lit_transfer.compat import set_scheduler_last_lr

__all__ = ["InverseDecayLR", "inverse_decay", "CosineDecayLR", "cosine_decay"]


def inverse_decay(progress: float, rate: float = 10.0, power: float = 0.75) -> float:
    """The factor ``1 / (1 + α p)^β`` (α = ``rate``, β = ``power``) at training progress ``p`` in [0, 1]."""
    return (1.0 + rate * min(max(progress, 0.0), 1.0)) ** (-power)


class InverseDecayLR(LambdaLR):
    interval = "step"  # the model steps it every optimizer step, not every epoch

    def __init__(self, optimizer: torch.optim.Optimizer, rate: float = 10.0, power: float = 0.75,
                 total_steps: Optional[int] = None, last_epoch: int = -1):
        self.rate, self.power, self.total_steps = rate, power, total_steps
        super().__init__(optimizer, self._factor, last_epoch=last_epoch)

    def _factor(self, step: int) -> float:
        total = self.total_steps
        return inverse_decay(step / total if total else 0.0, self.rate, self.power)

    def set_total_steps(self, total: int) -> None:
        """Called by the model once the trainer knows the number of steps; re-applies the current factor."""
        self.total_steps = int(total)
        factor = self._factor(self.last_epoch)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * factor
        set_scheduler_last_lr(self, [g["lr"] for g in self.optimizer.param_groups])


def cosine_decay(progress: float, final: float = 0.0) -> float:
    """The factor ``final + (1 - final) (1 + cos(π p)) / 2`` at training progress ``p`` in [0, 1]."""
    import math

    p = min(max(progress, 0.0), 1.0)
    return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * p))


class CosineDecayLR(InverseDecayLR):
    """Cosine annealing from the base learning rate to ``final`` × it over the run's optimizer steps (SGDR without
    restarts, Loshchilov & Hutter 2017), stepped every step: a 1-shot run (one step an epoch) and a 20-shot run
    anneal alike. ``total_steps`` is filled in by the model from the trainer when left ``None``."""

    def __init__(self, optimizer: torch.optim.Optimizer, final: float = 0.0, total_steps: Optional[int] = None,
                 last_epoch: int = -1):
        self.final = final
        super().__init__(optimizer, total_steps=total_steps, last_epoch=last_epoch)

    def _factor(self, step: int) -> float:
        total = self.total_steps
        return cosine_decay(step / total if total else 0.0, self.final)
