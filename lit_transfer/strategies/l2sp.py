"""L2-SP (Li et al., 2018): keep fine-tuned weights near the transferred starting point.

``Ω(w) = α/2 ‖w_S − w_S⁰‖² + β/2 ‖w_head‖²`` — the transferred backbone ``w_S`` is pulled toward its
starting point ``w_S⁰`` instead of toward zero (plain weight decay would erase what was transferred), and
the new head gets ordinary L2. Compose it with the model (``model.regularizer``); the param groups then get
no weight decay (``replaces_weight_decay``).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Regularizer", "L2SP"]


class Regularizer(nn.Module):
    """What ``model.regularizer`` takes: ``forward(model)`` → a scalar added to the training loss.

    ``bind(model, checkpoint)`` (optional) runs once the transferred weights are loaded, e.g. to snapshot them;
    it reads the model, never changes it.
    ``replaces_weight_decay``: the optimizer's weight decay is set to 0 for every param group.
    """

    replaces_weight_decay = False

    def bind(self, model: nn.Module, checkpoint=None) -> None:
        pass

    def forward(self, model: nn.Module) -> torch.Tensor:
        raise NotImplementedError


class L2SP(Regularizer):
    # Ω already holds the head's L2 (β) and pulls the backbone toward w⁰, not toward zero: plain weight decay on
    # top would undo what L2-SP keeps, so it is off whatever optimizer the model or experiment config chose.
    replaces_weight_decay = True

    def __init__(self, alpha: float = 0.01, beta: float = 0.01):
        super().__init__()
        self.alpha, self.beta = alpha, beta
        self._names: list[str] = []

    def bind(self, model: nn.Module, checkpoint=None) -> None:
        """Snapshot the transferred backbone weights ``w_S⁰`` (buffers: saved with checkpoints, so resume
        keeps the original starting point rather than the weights at the time of the resume)."""
        for name, p in model.backbone.named_parameters():
            buffer = name.replace(".", "__")
            self.register_buffer(buffer, p.detach().clone())
            self._names.append(name)

    def forward(self, model: nn.Module) -> torch.Tensor:
        params = dict(model.backbone.named_parameters())
        sp = sum(
            ((params[n] - getattr(self, n.replace(".", "__"))) ** 2).sum() for n in self._names if params[n].requires_grad
        )
        head = sum((p**2).sum() for p in model.head.parameters() if p.requires_grad)
        return 0.5 * self.alpha * sp + 0.5 * self.beta * head
