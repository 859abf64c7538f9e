"""Learning without Forgetting (Li & Hoiem, 2016): fine-tune on the target while distilling the source
head's own pre-fine-tuning outputs on the target inputs — the articles' ``L_s(θ_t) ≤ L_s(θ_s)`` as a penalty.

At bind the model's backbone and source head (the source checkpoint's head: ``model.weights`` must be a
lit_transfer checkpoint) are copied and frozen for good; they give the targets. The live ``source_head``
trains (as in LwF) with ``weight · T² · KL(old ‖ new)``, next to the target cross-entropy.
Data: ``train_on: target`` (the unlabeled stream, when configured, is distilled too).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from lit_transfer.strategies.objective import Frozen, Objective, SourceHeadUse, kd_loss, labelled, unlabeled

__all__ = ["LwF"]


class LwF(Objective):
    requires = ("target",)

    def __init__(self, temperature: float = 2.0, weight: float = 1.0, train_source_head: bool = True):
        super().__init__()
        self.temperature, self.weight, self.train_source_head = temperature, weight, train_source_head

    @property
    def source_head_use(self) -> SourceHeadUse:
        """The source checkpoint's head (whose outputs LwF preserves), trained or not."""
        return SourceHeadUse(trainable=self.train_source_head, from_checkpoint=True)

    def bind(self, model: nn.Module, checkpoint=None) -> None:
        self.old_backbone = Frozen(copy.deepcopy(model.backbone))
        self.old_head = Frozen(copy.deepcopy(model.source_head))

    @torch.no_grad()
    def source_targets(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The frozen pre-fine-tuning model's source-head logits (same preprocessing as the model)."""
        return self.old_head(self.old_backbone(model.preprocess(x)))

    def training_step(self, model: nn.Module, batch):
        x, y = labelled(batch, "target")
        xu = unlabeled(batch)
        inputs = x if xu is None else torch.cat([x, xu])
        f = model.embed(inputs)
        ce = model.task_loss(model.head(f[: len(x)]), y)
        distill = kd_loss(model.source_head(f), self.source_targets(model, inputs), self.temperature)
        return ce + self.weight * distill, {"ce_loss": ce, "lwf_loss": distill}
