"""Convergence is checked, not assumed: the validation curve of a run, and whether it was still rising.

A gain over a baseline that stopped while still improving measures the budget, not the method (scratch needs
longer schedules to catch up: He et al., 2019). :class:`ValidationCurve` records the selection metric after
every validation; :func:`still_improving` reads the end of that curve, and ``lit-transfer report`` refuses to
call a gain (or negative transfer) against a baseline whose runs had not converged.

A run selected without target labels (``selection: entropy|snd|dev``) cannot be checked on its selection score:
the entropy score keeps rising as predictions sharpen after the accuracy has settled. Its convergence is read
from the share of target val predictions that changed since the previous validation
(``target/val_pred_change``, label-free): the target accuracy can only move where predictions move, so a run
whose predictions still change by more than ``PRED_TOL`` per validation over its last quarter has not converged.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

from lightning.pytorch import Callback, LightningModule, Trainer

from lit_transfer.evaluation import UNSUPERVISED_SELECTIONS

__all__ = ["still_improving", "predictions_changing", "ValidationCurve", "TAIL", "TOL", "PRED_TOL", "PRED_CHANGE"]

TAIL = 0.25  # the "last part" of training: the final quarter of the validation points
TOL = 0.01  # a rise of more than 1 pp between the last two quarters counts as still improving
PRED_TOL = 0.02  # label-free: more than 2 % of the target val predictions changing per validation
PRED_CHANGE = "target/val_pred_change"


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


def predictions_changing(changes: Sequence[float], tail: float = TAIL, tol: float = PRED_TOL) -> Optional[bool]:
    """Whether the mean share of predictions changed per validation, over the last ``tail``, exceeds ``tol``."""
    xs = [float(v) for v in changes if v is not None]
    if len(xs) < 4:
        return None
    if not all(math.isfinite(v) for v in xs):
        return True
    k = max(2, math.ceil(len(xs) * tail))
    return sum(xs[-k:]) / k > tol


class ValidationCurve(Callback):
    """Records ``(optimizer step, value)`` of the selection metric and the target's val accuracy per validation.

    The curve survives resume (``state_dict``), so a resumed run reports its whole history. Its
    :meth:`summary` goes into ``result.json`` (``curve`` and ``convergence``); the report plots the curves
    against optimizer steps ("transfer learns faster" vs "transfer ends higher").
    """

    def __init__(self, monitor: str = "val_acc", keys: Sequence[str] = ("target/val_acc", PRED_CHANGE)):
        self.monitor, self.keys = monitor, tuple(keys)
        self.curve: dict[str, list] = self._empty()
        self.label_free = False  # the run selects without target labels: convergence from prediction changes

    def _empty(self) -> dict[str, list]:
        return {"step": [], self.monitor: [], **{k: [] for k in self.keys if k != self.monitor}}

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":  # not `lit-transfer validate`
            return
        metrics = trainer.callback_metrics
        if self.monitor not in metrics:
            return
        hparams = getattr(pl_module, "hparams", {})
        self.label_free = hparams.get("selection") in UNSUPERVISED_SELECTIONS
        self.curve["step"].append(int(trainer.global_step))
        for key in list(self.curve)[1:]:
            value = metrics.get(key)
            self.curve[key].append(None if value is None else round(float(value), 6))

    def summary(self, tail: float = TAIL, tol: float = TOL) -> dict:
        values = self.curve[self.monitor]
        best = max(range(len(values)), key=lambda i: (values[i], -i)) if values else None
        metric, still = self.monitor, still_improving(values, tail, tol)
        changes = self.curve.get(PRED_CHANGE, [])
        if self.label_free and any(v is not None for v in changes):
            metric, tol, still = PRED_CHANGE, PRED_TOL, predictions_changing(changes, tail)
        return {
            "curve": {k: list(v) for k, v in self.curve.items() if any(x is not None for x in v) or k == self.monitor},
            "convergence": {
                "metric": metric, "points": len(values), "tail": tail, "tol": tol,
                "still_improving": still,
                "best_step": self.curve["step"][best] if best is not None else None,
                "last_step": self.curve["step"][-1] if values else None,
            },
        }

    def state_dict(self) -> dict:
        return {"curve": self.curve, "label_free": self.label_free}

    def load_state_dict(self, state_dict: dict) -> None:
        n = len(state_dict["curve"].get("step", []))  # keys new since the checkpoint: None at its points
        self.curve = {**{k: [None] * n for k in self._empty()}, **{k: list(v) for k, v in state_dict["curve"].items()}}
        self.label_free = state_dict.get("label_free", False)
