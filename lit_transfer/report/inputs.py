"""What the report reads: the ok results under a directory, and what identifies a run's row (network, weights'
origin, input size, checkpoint selection, the baseline it pairs with)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from lit_transfer.plan.weights import File, Hub, Random, SourceStage, parse_weights
from lit_transfer.results import Result

__all__ = ["PROG", "SOURCE_STAGE", "ReportError", "collect", "weights_origin", "input_size", "model_key",
           "parse_baseline", "selection_label", "shots_key"]

PROG = "lit-transfer report"
SOURCE_STAGE = "source"  # run.strategy of a source stage: a model the rows load, never a row itself


class ReportError(ValueError):
    """Bad report input; printed as one line."""


def collect(root: str | os.PathLike) -> tuple[list[Result], list[str]]:
    """All successful results under `root` (recursive), plus notes about files that were left out."""
    results, notes = [], []
    for path in sorted(Path(root).rglob("result.json")):
        r = Result.read(path)  # older files upgraded: a label-free selection score stored as val_acc
        if r is None:
            notes.append(f"unreadable result left out: {path}")
            continue
        if not r.ok:
            notes.append(f"{r.get('status')} run left out of the means: {path}"
                         + (f" ({r['error']})" if r.get("error") else ""))
            continue
        r["_path"] = str(path)
        results.append(r)
    return results, notes


def weights_origin(r: dict) -> str:
    """Where a run's backbone weights came from: ``random``, ``source stage``, ``pretrained (hub)``,
    ``pretrained (package)`` (weights an installed package ships, :mod:`lit_transfer.models.packaged`) or ``file``;
    results written before ``weights_origin`` was recorded are read from their ``weights`` value."""
    origin = r.get("weights_origin")
    if origin is None:
        weights = parse_weights(r.get("weights"))
        if isinstance(weights, Random):
            return "random"
        if isinstance(weights, Hub):
            return "pretrained (hub)"
        if isinstance(weights, SourceStage):
            return "source stage"
        return "source stage" if isinstance(weights, File) and "-source-" in str(weights) else "file"
    if origin == "hub":
        return "pretrained (hub)"
    if str(origin).startswith("package:"):
        return "pretrained (package)"  # result.json names the package
    return str(origin)


def input_size(r: dict) -> str | None:
    """``HxW`` of the images a run trained on (``None`` for results that do not record it)."""
    size = r.get("input_size")
    return f"{size[-2]}x{size[-1]}" if isinstance(size, list) and len(size) >= 2 else None


def model_key(r: dict) -> tuple:
    """What defines the compared network besides the strategy: backbone, weights' origin and input size."""
    return (str(r.get("backbone") or ""), weights_origin(r), input_size(r))


def parse_baseline(text: str) -> tuple[str, str | None]:
    """``STRATEGY`` (pair with that strategy's runs of the same backbone and input size) or ``STRATEGY@BACKBONE``
    (pair every row with that backbone's runs of the strategy at the same input size, e.g. ``scratch@small_cnn``)."""
    strategy, _, backbone = text.partition("@")
    if not strategy or (_ and not backbone):
        raise ReportError(f"--baseline must be STRATEGY or STRATEGY@BACKBONE, got {text!r}")
    return strategy, backbone or None


def selection_label(r: dict) -> str | None:
    """How a run chose its tested checkpoint: ``source val``/``target val`` (accuracy), ``entropy``, ``snd``,
    ``dev`` (label-free scores of target val images) or ``oracle``; ``None`` for results that do not record it."""
    sel = r.get("selection")
    if sel in ("auto", "source_val"):
        train_on = "source" if sel == "source_val" else str(r.get("train_on") or "target")
        return f"{'target' if train_on == 'source+target' else train_on} val"
    return sel


def shots_key(shots: Any) -> float:
    """Sort key of a ``target_shots`` value: all labels (``None``) after every count."""
    return math.inf if shots is None else float(shots)
