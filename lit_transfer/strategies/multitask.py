"""Multi-task learning: labelled source and labelled target batches together, one shared backbone, one
head per domain, ``target_weight · CE_target + source_weight · CE_source``.

The source head is the model's ``source_head`` (the source checkpoint's head when ``model.weights`` is one,
else a new head with ``source_num_classes`` classes); it trains, and the source domain is evaluated with it,
so both domains are reported. Data: ``train_on: source+target`` (a ``CombinedLoader``, ``max_size_cycle``).
"""

from __future__ import annotations

from typing import Optional

from torch import nn

from lit_transfer.strategies.dann import embed_pair
from lit_transfer.strategies.objective import Objective, SourceHeadUse, labelled

__all__ = ["MultiTask"]


class MultiTask(Objective):
    requires = ("source", "target")

    def __init__(self, source_weight: float = 1.0, target_weight: float = 1.0, source_num_classes: Optional[int] = None):
        super().__init__()
        self.source_weight, self.target_weight = source_weight, target_weight
        self.source_num_classes = source_num_classes

    @property
    def source_head_use(self) -> SourceHeadUse:
        return SourceHeadUse(trainable=True, num_classes=self.source_num_classes, evaluates_source=True)

    def check_data(self, model: nn.Module, datamodule) -> None:
        super().check_data(model, datamodule)
        n = getattr(datamodule, "source_num_classes", model.source_num_classes)
        if n != model.source_num_classes:
            from lit_transfer.errors import TransferConfigError

            raise TransferConfigError(f"the source domain has {n} classes but the source head has "
                                      f"{model.source_num_classes}; set the objective's source_num_classes: {n}")

    def training_step(self, model: nn.Module, batch):
        xs, ys = labelled(batch, "source")
        xt, yt = labelled(batch, "target")
        fs, ft = embed_pair(model, xs, xt)
        source = model.task_loss(model.source_head(fs), ys)
        target = model.task_loss(model.head(ft), yt)
        loss = self.target_weight * target + self.source_weight * source
        return loss, {"source_loss": source, "target_loss": target}
