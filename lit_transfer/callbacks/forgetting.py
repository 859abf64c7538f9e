"""Forgetting: how much a target run degrades the source task it was transferred from.

When ``model.weights`` is a lit_transfer checkpoint, the model keeps its (source) head, frozen, as
``source_head``. This callback measures the source test accuracy of the loaded model once at fit start
(``source/test_acc_before``; stored in the model's ``source_acc_before`` buffer so a resumed run restores it
rather than re-measuring a half-trained model), and after training at test time (``source/test_acc_after``),
and logs ``source/forgetting = before - after``.
"""

from __future__ import annotations

import torch
from lightning.pytorch import Callback

__all__ = ["ForgettingMeter", "tracks_forgetting", "source_head_accuracy"]


def tracks_forgetting(model, datamodule) -> bool:
    """A target run from a source checkpoint whose source head fits the data's source domain."""
    if not hasattr(model, "source_acc_before") or datamodule is None or not hasattr(datamodule, "subset"):
        return False
    from lit_transfer.data import domains

    return (getattr(datamodule, "primary", "target") != "source"
            and datamodule.source_num_classes == model.source_num_classes
            and domains.in_chans(datamodule.source) == model.hparams.in_chans)


@torch.no_grad()
def source_head_accuracy(model, datamodule) -> float:
    """Accuracy of the model's current backbone + ``source_head`` on the source test split."""
    images, labels = datamodule.subset("source", "test")
    was_training = model.training
    model.eval()
    correct, bs = 0, datamodule.eval_batch_size
    for i in range(0, len(labels), bs):
        x, y = images[i : i + bs].to(model.device), labels[i : i + bs].to(model.device)
        correct += int((model.source_head(model.embed(x)).argmax(-1) == y).sum())
    model.train(was_training)
    return correct / max(len(labels), 1)


class ForgettingMeter(Callback):
    """Logs ``source/test_acc_before``, ``source/test_acc_after`` and ``source/forgetting`` at test end."""

    def on_fit_start(self, trainer, pl_module) -> None:
        dm = getattr(trainer, "datamodule", None)
        if tracks_forgetting(pl_module, dm) and torch.isnan(pl_module.source_acc_before):
            pl_module.source_acc_before.fill_(source_head_accuracy(pl_module, dm))

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        dm = getattr(trainer, "datamodule", None)
        if not tracks_forgetting(pl_module, dm) or torch.isnan(pl_module.source_acc_before):
            return
        before, after = float(pl_module.source_acc_before), source_head_accuracy(pl_module, dm)
        pl_module.log("source/test_acc_before", before)
        pl_module.log("source/test_acc_after", after)
        pl_module.log("source/forgetting", before - after)
