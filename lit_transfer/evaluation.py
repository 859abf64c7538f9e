"""Validation/test metrics of :class:`~lit_transfer.module.TransferClassifier`, accumulated over an epoch.

Per domain and split: accuracy, macro F1 and the mean cross-entropy over the whole epoch (all ranks), logged
once at the epoch end as ``{domain}/{split}_acc|f1|loss``. The selection domain's validation values are also
logged as ``val_acc``/``val_loss``: what checkpointing and plateau schedulers watch. For unsupervised domain
adaptation, two label-free scores of the target val predictions (never their labels) are logged too, and one
of them is ``val_acc`` with ``selection: entropy|snd``.

Accumulating (rather than logging the metric objects on every batch, the usual Lightning pattern) avoids moving
each metric between devices per call; the metric states live in the model's ``metrics`` ModuleDict so they
follow it to its device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

__all__ = ["metric_collection", "EvalAccumulator", "check_selection", "UNSUPERVISED_SELECTIONS"]

UNSUPERVISED_SELECTIONS = ("entropy", "snd")  # scores of target val images (lit_transfer.strategies.selection)


def metric_collection(num_classes: int) -> MetricCollection:
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes, average="micro"),
            "f1": MulticlassF1Score(num_classes, average="macro"),
        },
        compute_groups=False,  # two metrics with different states: grouping would only add a check per update
    )


class EvalAccumulator:
    """Loss sums and label-free-score inputs of the current evaluation epoch (metric states are the model's)."""

    def __init__(self) -> None:
        self.loss: dict[str, list[torch.Tensor]] = {}  # "target_val" -> [sum of loss * n, n]
        self.target_val_probs: list[torch.Tensor] = []

    def start(self, metrics, split: str) -> None:
        if split == "val":
            self.target_val_probs = []
        for key, m in metrics.items():
            if key.endswith(f"_{split}"):
                m.reset()
                self.loss.pop(key, None)

    def update(self, metrics, key: str, logits: torch.Tensor, y: torch.Tensor, keep_probs: bool) -> None:
        metrics[key].update(logits, y)
        loss_sum = F.cross_entropy(logits, y, reduction="sum").detach()
        n = torch.tensor(float(len(y)), device=loss_sum.device)
        acc = self.loss.get(key)
        self.loss[key] = [loss_sum, n] if acc is None else [acc[0] + loss_sum, acc[1] + n]
        if keep_probs:  # label-free scores: only the predictions on target val images, never their labels
            self.target_val_probs.append(logits.detach().float().softmax(-1))

    def log_epoch(self, model, split: str) -> None:
        """Compute, reduce over ranks and log this split's metrics per domain; reset them."""
        reduce = model.trainer.strategy.reduce
        for key in sorted(k for k in self.loss if k.endswith(f"_{split}")):
            domain = key[: -len(split) - 1]
            loss_sum, n = (reduce(t, reduce_op="sum") for t in self.loss.pop(key))
            values = {f"{domain}/{split}_{k}": v for k, v in model.metrics[key].compute().items()}
            values[f"{domain}/{split}_loss"] = loss_sum / n
            if split == "val" and domain == model.selection_domain():
                values["val_acc"], values["val_loss"] = values[f"{domain}/val_acc"], loss_sum / n
            model.log_dict(values)
            model.metrics[key].reset()

    def log_label_free_scores(self, model) -> None:
        """Information maximisation and SND of the target val predictions; ``val_acc`` when they select."""
        if not self.target_val_probs:
            return
        from lit_transfer.strategies.selection import snd_score

        probs = torch.cat(self.target_val_probs)
        self.target_val_probs = []
        reduce = model.trainer.strategy.reduce
        ent = -(probs * probs.clamp_min(1e-12).log()).sum(-1)
        prob_sum, ent_sum, n = (reduce(t, reduce_op="sum") for t in
                                (probs.sum(0), ent.sum(), torch.tensor(float(len(ent)), device=ent.device)))
        mean_p = prob_sum / n
        # Information maximisation: confident (low mean entropy) and diverse (high entropy of the mean).
        im = -(mean_p * mean_p.clamp_min(1e-12).log()).sum() - ent_sum / n
        # SND on this rank's predictions (all of them on one device).
        snd = reduce(snd_score(probs), reduce_op="mean")
        model.log("target/val_im_score", im)
        model.log("target/val_snd", snd)
        selection = model.hparams.selection
        if selection in UNSUPERVISED_SELECTIONS:
            model.log("val_acc", im if selection == "entropy" else snd)
            model.log("val_loss", ent_sum / n)


def check_selection(model, datamodule) -> None:
    """At fit start: the selection metric's validation data is served."""
    needed = model.selection_domain() or "target"
    if needed not in getattr(datamodule, "val_domains", [needed]):
        from lit_transfer.errors import TransferConfigError

        raise TransferConfigError(f"model.selection={model.hparams.selection} needs {needed} validation data, "
                                  f"but this data pair validates on {datamodule.val_domains} only")
