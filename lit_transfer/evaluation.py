"""Validation/test metrics of :class:`~lit_transfer.module.TransferClassifier`, accumulated over an epoch.

Per domain and split: accuracy, macro F1 and the mean cross-entropy over the whole epoch (all ranks), logged
once at the epoch end as ``{domain}/{split}_acc|f1|loss``. The selection domain's validation values are also
logged as ``val_acc``/``val_loss``: what checkpointing and plateau schedulers watch. For unsupervised domain
adaptation, three label-free scores (IM and SND of the target val predictions, DEV of the val features; never a
target label) and the share of target val predictions that changed since the last validation are logged too;
with ``selection: entropy|snd|dev`` the selecting score is also logged as ``target/val_score`` (IM, SND or −DEV
risk: higher is better), what checkpointing watches then. It is not an accuracy, so it is never ``val_acc``.

Accumulating (rather than logging the metric objects on every batch, the usual Lightning pattern) avoids moving
each metric between devices per call; the metric states live in the model's ``metrics`` ModuleDict so they
follow it to its device. Each batch only adds to on-device sums (a confusion matrix, the loss sum; the
example count is a host integer): nothing is read back until the epoch end, so evaluation never makes the host
wait for the device per batch (torchmetrics' per-batch argument checks and ``bincount`` do, on CUDA).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from lit_transfer.compat import attached_trainer

__all__ = ["metric_collection", "ConfusionMatrix", "EvalAccumulator", "check_selection", "UNSUPERVISED_SELECTIONS",
           "label_free_scores_wanted", "dev_wanted", "SCORE", "selection_metric", "eval_domain"]

UNSUPERVISED_SELECTIONS = ("entropy", "snd", "dev")  # no target label (lit_transfer.strategies.selection)
SCORE = "target/val_score"  # the label-free selection score (higher is better): not an accuracy


def selection_metric(selection: str) -> str:
    """What checkpointing monitors (maximised) under ``model.selection``: ``target/val_score`` for a label-free
    selection, else ``val_acc`` (the selection domain's val accuracy)."""
    return SCORE if selection in UNSUPERVISED_SELECTIONS else "val_acc"
DEV_MAX_ROWS = 2000  # per domain: the density-ratio classifier runs every validation


class ConfusionMatrix(nn.Module):
    """Counts of (label, prediction) pairs on the model's device; accuracy (micro) and macro F1 from them.

    The same definitions as torchmetrics' ``MulticlassAccuracy(average="micro")`` and
    ``MulticlassF1Score(average="macro")``: F1 per class ``2tp / (2tp + fp + fn)`` (0 where undefined), averaged
    over the classes that occur among the labels or the predictions. ``update`` is one ``index_add_`` (no host
    read); ``compute`` reduces over ranks (sum) and is the only read.
    """

    def __init__(self, num_classes: int):
        super().__init__()
        self.num_classes = num_classes
        # Not a buffer: whatever handles a model's buffers must leave the counts alone. Lightning's
        # EMAWeightAveraging swaps every buffer back at validation end, before the module's own hook computes
        # (every val accuracy read 0.0 under EMA); DDP broadcasts rank 0's buffers.
        self.counts = torch.zeros(num_classes * num_classes, dtype=torch.int64)

    def update(self, logits: torch.Tensor, y: torch.Tensor) -> None:
        if self.counts.device != logits.device:  # follows the logits (no buffer moves it with the model)
            self.counts = self.counts.to(logits.device)
        pred = logits.argmax(dim=-1)
        cell = y.to(torch.int64) * self.num_classes + pred
        self.counts.index_add_(0, cell, torch.ones_like(cell))

    def reset(self) -> None:
        self.counts.zero_()

    def clone(self) -> "ConfusionMatrix":
        return copy.deepcopy(self)

    def compute(self, reduce=None) -> dict[str, torch.Tensor]:
        counts = self.counts if reduce is None else reduce(self.counts.clone(), reduce_op="sum")
        cm = counts.view(self.num_classes, self.num_classes).double()  # rows: labels, columns: predictions
        tp = cm.diagonal()
        fp, fn = cm.sum(0) - tp, cm.sum(1) - tp
        total = cm.sum()
        acc = torch.where(total > 0, tp.sum() / total.clamp_min(1), torch.zeros_like(total))
        denom = 2 * tp + fp + fn
        f1 = torch.where(denom > 0, 2 * tp / denom.clamp_min(1), torch.zeros_like(denom))
        present = (denom > 0).double()
        macro = (f1 * present).sum() / present.sum().clamp_min(1)
        return {"acc": acc.float(), "f1": macro.float()}


def metric_collection(num_classes: int) -> ConfusionMatrix:
    """The per-(domain, split) metric state: a :class:`ConfusionMatrix`."""
    return ConfusionMatrix(num_classes)


def label_free_scores_wanted(model) -> bool:
    """Unsupervised DA (the head trained on the source) or a label-free selection: score the target val images."""
    return model.hparams.selection in UNSUPERVISED_SELECTIONS or model.train_domain() == "source"


def dev_wanted(model) -> bool:
    """DEV's classifier runs every validation: only where a label-free selection is in use or the run reads the
    unlabeled target (unsupervised DA and its baseline), not for every source-trained run (source stages)."""
    dm = getattr(model.trainer, "datamodule", None)
    return model.hparams.selection in UNSUPERVISED_SELECTIONS or bool(getattr(dm, "unlabeled_target", False))


def eval_domain(model, split: str, dataloader_idx: int) -> str:
    """The domain of val/test loader ``dataloader_idx`` (the data module's ``{split}_domains``)."""
    dm = getattr(attached_trainer(model), "datamodule", None)
    names = getattr(dm, f"{split}_domains", None) or ["target"]
    return names[dataloader_idx] if dataloader_idx < len(names) else f"domain{dataloader_idx}"


class EvalAccumulator:
    """Loss sums and label-free-score inputs of the current evaluation epoch (metric states are the model's)."""

    def __init__(self) -> None:
        self.loss: dict[str, list] = {}  # "target_val" -> [sum of the losses (tensor), n (int)]
        self.target_val_probs: list[torch.Tensor] = []
        # DEV's inputs: val features of both domains and the source val per-example losses (source labels only)
        self.dev: dict[str, list[torch.Tensor]] = {"source": [], "target": [], "loss": []}
        self.last_preds: torch.Tensor | None = None  # target val predictions at the previous validation

    def start(self, metrics, split: str) -> None:
        if split == "val":
            self.target_val_probs = []
            self.dev = {"source": [], "target": [], "loss": []}
        for key, m in metrics.items():
            if key.endswith(f"_{split}"):
                m.reset()
                self.loss.pop(key, None)

    def step(self, model, batch, split: str, dataloader_idx: int) -> None:
        """One val/test batch ``(x, y)`` of loader ``dataloader_idx``: embed, classify with the head that
        predicts its domain, accumulate."""
        x, y = batch
        domain = eval_domain(model, split, dataloader_idx)
        features = model.embed(x)
        self.update(model, domain, split, features, model.domain_head(domain)(features), y)

    def update(self, model, domain: str, split: str, features: torch.Tensor, logits: torch.Tensor,
               y: torch.Tensor) -> None:
        key = f"{domain}_{split}"
        model.metrics[key].update(logits, y)
        per_example = F.cross_entropy(logits, y, reduction="none").detach()
        loss_sum = per_example.float().sum()
        acc = self.loss.get(key)  # the count is a host integer: no host→device copy per batch
        self.loss[key] = [loss_sum, len(y)] if acc is None else [acc[0] + loss_sum, acc[1] + len(y)]
        if split != "val" or not label_free_scores_wanted(model):
            return
        if domain == "target":  # label-free scores: only the predictions on target val images, never their labels
            self.target_val_probs.append(logits.detach().float().softmax(-1))
        if domain in ("source", "target") and dev_wanted(model):  # DEV: val features, source losses
            self.dev[domain].append(features.detach().float())
            if domain == "source":
                self.dev["loss"].append(per_example.float())

    def log_epoch(self, model, split: str) -> None:
        """Compute, reduce over ranks and log this split's metrics per domain; reset them."""
        reduce = model.trainer.strategy.reduce
        for key in sorted(k for k in self.loss if k.endswith(f"_{split}")):
            domain = key[: -len(split) - 1]
            loss_sum, count = self.loss.pop(key)
            n = torch.full((), float(count), dtype=loss_sum.dtype, device=loss_sum.device)
            loss_sum, n = (reduce(t, reduce_op="sum") for t in (loss_sum, n))
            values = {f"{domain}/{split}_{k}": v for k, v in model.metrics[key].compute(reduce).items()}
            values[f"{domain}/{split}_loss"] = loss_sum / n
            if split == "val" and domain == model.selection_domain():
                values["val_acc"], values["val_loss"] = values[f"{domain}/val_acc"], loss_sum / n
            model.log_dict(values)
            model.metrics[key].reset()

    def log_label_free_scores(self, model) -> None:
        """IM, SND and DEV scores of the target val images, and how many predictions changed since the last
        validation; ``target/val_score`` when one of them selects."""
        if not self.target_val_probs:
            return
        from lit_transfer.strategies.selection import density_ratio, dev_risk, snd_score

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
        scores = {"target/val_im_score": im, "target/val_snd": reduce(snd_score(probs), reduce_op="mean")}
        if self.dev["source"] and self.dev["target"]:  # DEV on this rank's features, like SND
            src, tgt = (torch.cat(self.dev[k])[:DEV_MAX_ROWS] for k in ("source", "target"))
            risk = dev_risk(torch.cat(self.dev["loss"])[:DEV_MAX_ROWS], density_ratio(src, tgt))
            scores["target/val_dev_risk"] = reduce(risk.to(probs), reduce_op="mean")
        self.dev = {"source": [], "target": [], "loss": []}
        preds = probs.argmax(-1)
        if not model.trainer.sanity_checking:
            # Label-free convergence (lit_transfer.convergence): accuracy can only move where predictions do.
            if self.last_preds is not None and self.last_preds.shape == preds.shape:
                change = (preds != self.last_preds).float().mean()
                scores["target/val_pred_change"] = reduce(change, reduce_op="mean")
            self.last_preds = preds
        model.log_dict(scores)
        selection = model.hparams.selection
        if selection in ("entropy", "snd"):
            model.log(SCORE, im if selection == "entropy" else scores["target/val_snd"])
            model.log("val_loss", ent_sum / n)
        elif selection == "dev" and "target/val_dev_risk" in scores:
            model.log(SCORE, -scores["target/val_dev_risk"])
            model.log("val_loss", scores["target/val_dev_risk"])


def check_selection(model, datamodule) -> None:
    """At fit start: the selection metric's validation data is served."""
    needed = [model.selection_domain() or "target"] + (["source"] if model.hparams.selection == "dev" else [])
    served = getattr(datamodule, "val_domains", needed)
    if any(d not in served for d in needed):
        from lit_transfer.errors import TransferConfigError

        raise TransferConfigError(f"model.selection={model.hparams.selection} needs {needed} validation data, "
                                  f"but this data pair validates on {datamodule.val_domains} only")
