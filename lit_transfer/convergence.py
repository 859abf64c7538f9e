"""Convergence is checked, not assumed: the validation curve of a run, and whether it was still rising.

A gain over a baseline that stopped while still improving measures the budget, not the method (scratch needs
longer schedules to catch up: He et al., 2019). :class:`ValidationCurve` records the selection metric after
every validation; :func:`still_improving` reads the end of that curve, and ``lit-transfer report`` refuses to
call a gain (or negative transfer) against a baseline whose runs had not converged.

A run selected without target labels (``selection: entropy|snd|dev``) cannot be checked on its selection score:
the entropy score keeps rising as predictions sharpen after the accuracy has settled. Its convergence is read
from its target val *predictions* (no labels): the target accuracy can only move where predictions move. Single
validations are too jumpy for that (3–5 % of the digits_m val predictions flip back and forth between consecutive
epochs even at the end of an annealed schedule), so, like :func:`still_improving` comparing the means of the last
two quarters, :func:`prediction_drift` compares each image's most frequent prediction over the last quarter with
that over the quarter before: a run where more than ``PRED_TOL`` of them differ has not converged.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

from lightning.pytorch import Callback, LightningModule, Trainer

from lit_transfer.evaluation import UNSUPERVISED_SELECTIONS, selection_metric

import torch

__all__ = ["still_improving", "prediction_drift", "ValidationCurve", "TAIL", "TOL", "PRED_TOL", "DRIFT"]

TAIL = 0.25  # the "last part" of training: the final quarter of the validation points
TOL = 0.01  # a rise of more than 1 pp between the last two quarters counts as still improving
PRED_TOL = 0.02  # label-free: more than 2 % of the target val images changing their quarter-modal prediction
DRIFT = "target val modal-prediction drift"


def still_improving(values: Sequence[float], tail: float = TAIL, tol: float = TOL) -> Optional[bool]:
    """Whether the mean of the last ``tail`` of a curve exceeds the mean of the part just before it by > ``tol``.

    Means over several points, not single maxima: a few-shot validation set moves in steps of one example,
    and one lucky evaluation must not count as progress. ``None`` when the curve has fewer than 4 points
    (too short to tell); non-finite values count as not converged.
    """
    xs = [float(v) for v in values]
    if len(xs) < 4:
        return None
    if not all(math.isfinite(v) for v in xs):
        return True
    k = max(2, math.ceil(len(xs) * tail))
    k = min(k, len(xs) // 2)
    last, before = xs[-k:], xs[-2 * k : -k]
    return sum(last) / k - sum(before) / k > tol


def prediction_drift(history: Sequence[Sequence[int]], tail: float = TAIL) -> Optional[float]:
    """Share of images whose most frequent prediction over the last ``tail`` of the validations differs from
    their most frequent prediction over the same number of validations just before; ``None`` under 4 points."""
    rows = [list(p) for p in history if p is not None]
    if len(rows) < 4 or len({len(r) for r in rows}) != 1:
        return None
    k = min(max(2, math.ceil(len(rows) * tail)), len(rows) // 2)
    preds = torch.tensor(rows)
    last, before = preds[-k:].mode(0).values, preds[-2 * k : -k].mode(0).values
    return float((last != before).float().mean())


class ValidationCurve(Callback):
    """Records ``(optimizer step, value)`` of the selection metric (``val_acc``, or ``target/val_score`` under a
    label-free selection) and the target's val accuracy per validation.

    The curve survives resume (``state_dict``), so a resumed run reports its whole history. Its
    :meth:`summary` goes into ``result.json`` (``curve`` and ``convergence``); the report plots the curves
    against optimizer steps ("transfer learns faster" vs "transfer ends higher").
    """

    def __init__(self, monitor: Optional[str] = None, keys: Sequence[str] = ("target/val_acc",)):
        # None: the model's selection metric (val_acc, or target/val_score under a label-free selection)
        self.monitor, self.keys, self._follow_selection = monitor or "val_acc", tuple(keys), monitor is None
        self.curve: dict[str, list] = self._empty()
        # Label-free selection: the target val predictions of every validation (convergence without labels).
        self.label_free, self.predictions = False, []
        self.val_size: Optional[int] = None  # examples behind the monitored accuracy: its resolution is 1/val_size

    def _empty(self) -> dict[str, list]:
        return {"step": [], self.monitor: [], **{k: [] for k in self.keys if k != self.monitor}}

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        selection = getattr(pl_module, "hparams", {}).get("selection", "auto")
        if self._follow_selection and not self.curve["step"] and self.monitor != selection_metric(selection):
            self.monitor = selection_metric(selection)
            self.curve = self._empty()

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":  # not `lit-transfer validate`
            return
        metrics = trainer.callback_metrics
        if self.monitor not in metrics:
            return
        hparams = getattr(pl_module, "hparams", {})
        self.label_free = hparams.get("selection") in UNSUPERVISED_SELECTIONS
        preds = getattr(getattr(pl_module, "evaluation", None), "last_preds", None)
        if self.label_free and preds is not None:
            self.predictions.append(preds.tolist())
        loaders = trainer.val_dataloaders
        first = loaders[0] if isinstance(loaders, (list, tuple)) and loaders else loaders
        labels = getattr(first, "labels", None)
        self.val_size = len(labels) if labels is not None else self.val_size
        self.curve["step"].append(int(trainer.global_step))
        for key in list(self.curve)[1:]:
            value = metrics.get(key)
            self.curve[key].append(None if value is None else round(float(value), 6))

    def summary(self, tail: float = TAIL, tol: float = TOL) -> dict:
        """The curve and its convergence verdict. The tolerance is at least one validation example (a 50-image
        val set moves in steps of 2 pp: a rise of one image is not progress)."""
        values = self.curve[self.monitor]
        if self.val_size:
            tol = max(tol, 1.0 / self.val_size)
        best = max(range(len(values)), key=lambda i: (values[i], -i)) if values else None
        convergence = {"metric": self.monitor, "tol": tol, "still_improving": still_improving(values, tail, tol)}
        if self.label_free and self.predictions:
            drift = prediction_drift(self.predictions, tail)
            convergence = {"metric": DRIFT, "tol": PRED_TOL, "drift": drift,
                           "still_improving": None if drift is None else drift > PRED_TOL}
        return {
            "curve": {k: list(v) for k, v in self.curve.items()},
            "convergence": {
                **convergence, "points": len(values), "tail": tail,
                "best_step": self.curve["step"][best] if best is not None else None,
                "last_step": self.curve["step"][-1] if values else None,
            },
        }

    def state_dict(self) -> dict:
        return {"curve": self.curve, "label_free": self.label_free, "predictions": self.predictions,
                "val_size": self.val_size, "monitor": self.monitor}

    def load_state_dict(self, state_dict: dict) -> None:
        self.curve = {k: list(v) for k, v in state_dict["curve"].items()}
        self.monitor = state_dict.get("monitor", self.monitor if self.monitor in self.curve else "val_acc")
        self.label_free = state_dict.get("label_free", False)
        self.predictions = [list(p) for p in state_dict.get("predictions", [])]
        self.val_size = state_dict.get("val_size")
