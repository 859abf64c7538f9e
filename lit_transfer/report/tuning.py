"""Hyper-parameter selection on validation only: of an lr grid's runs, the one each seed reports."""

from __future__ import annotations

import math
from collections import defaultdict

from lit_transfer.report.inputs import SOURCE_STAGE, selection_label

__all__ = ["SELECTION_SCORES", "select_tuned"]

SELECTION_SCORES = ("target/val_score_best", "target/val_score", "val_acc_best", "val_acc")  # first one present


def _val_score(r: dict) -> float:
    """What a run's own model selection maximised (its best ``target/val_score`` under a label-free selection,
    else its best ``val_acc``): the only score tuning may compare."""
    m = r.get("metrics") or {}
    v = next((m[k] for k in SELECTION_SCORES if k in m), None)
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else -math.inf


def select_tuned(results: list[dict]) -> tuple[list[dict], list[str]]:
    """Hyper-parameter selection on validation only: of the runs of one strategy that share experiment, shots,
    selection, seed, labelled examples (``split_hash``), backbone and transferred weights but differ in config
    (an lr grid), keep the one whose
    own selection metric was best. Every strategy is tuned the same way, on the same val labels it already
    counts; ties go to the first run in path order, so the choice does not depend on how the sweep ran."""
    cells: dict[tuple, list[dict]] = defaultdict(list)
    out = []
    for r in results:
        if r.get("strategy") == SOURCE_STAGE:
            out.append(r)
            continue
        # The model (backbone, transferred weights) is what is compared, never a hyper-parameter to pick.
        cells[(str(r.get("experiment")), str(r.get("strategy")), r.get("target_shots"), selection_label(r),
               r.get("seed"), r.get("split_hash"), r.get("backbone"), r.get("weights"))].append(r)
    tuned, scores = 0, set()
    for key in sorted(cells, key=str):
        rs = sorted(cells[key], key=lambda r: str(r.get("_path", r.get("run_dir", ""))))
        best = max(rs, key=_val_score)  # max keeps the first of equal scores
        if len(rs) > 1:
            tuned += 1
            best = {**best, "tuned_over": len(rs)}
            scores.add("target/val_score" if any(k.startswith("target/val_score") for k in best.get("metrics") or {})
                       else "val_acc")
        out.append(best)
    notes = [f"{tuned} cell(s) tuned on validation: of runs differing only in hyper-parameters (same strategy, "
             f"shots, seed and labelled examples) the one with the best {' or '.join(sorted(scores))} is reported"
             ] if tuned else []
    return out, notes
