"""Transfer gain over a baseline: the one pairing rule used by ``lit-transfer report`` and by W&B summaries.

A run is compared only with baseline runs of the same experiment that trained on the same labelled examples:
the same seed, the same number of target shots and the same ``split_hash``. Several matching baseline runs
(e.g. repeats) are averaged. Gains are in accuracy units (0.05 = 5 percentage points).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Iterable, Mapping

__all__ = ["ACC", "PAIR_KEYS", "pair_key", "paired_baselines", "transfer_gain", "load_result", "find_baselines"]

ACC = "target/test_acc"
PAIR_KEYS = ("experiment", "seed", "target_shots", "split_hash")


def pair_key(result: Mapping) -> tuple:
    """What must be equal for two runs to be compared: experiment, seed, target shots and labelled split."""
    return tuple(result.get(k) for k in PAIR_KEYS)


def accuracy(result: Mapping, key: str = ACC) -> float | None:
    v = (result.get("metrics") or {}).get(key)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def paired_baselines(result: Mapping, baselines: Iterable[Mapping]) -> list[Mapping]:
    """The baseline runs ``result`` pairs with (same :data:`PAIR_KEYS`), with an accuracy."""
    key = pair_key(result)
    return [b for b in baselines if pair_key(b) == key and accuracy(b) is not None]


def transfer_gain(result: Mapping, baselines: Mapping | Iterable[Mapping] | None) -> float | None:
    """``target/test_acc`` of ``result`` minus the mean of its paired baselines'; ``None`` without a pair.

    ``baselines``: one baseline result or several (any order; unpaired ones are ignored).
    """
    if baselines is None:
        return None
    if isinstance(baselines, Mapping):
        baselines = [baselines]
    own = accuracy(result)
    same = paired_baselines(result, baselines)
    if own is None or not same:
        return None
    return own - sum(accuracy(b) for b in same) / len(same)


def load_result(path: str | os.PathLike) -> dict | None:
    """A successful ``result.json`` as a dict; ``None`` if unreadable or a failed run's."""
    try:
        r = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(r, dict) or r.get("status", "ok") != "ok":
        return None
    from lit_transfer.results import upgrade

    return upgrade(r)  # older files: a label-free selection score stored as val_acc


def find_baselines(run_dir: str | os.PathLike, baseline: str = "scratch") -> list[dict]:
    """Finished ``baseline`` runs near ``run_dir`` that may pair with it.

    Looks at the run's siblings (a sweep's ``<out>/trials/*``) and its cousins (the CLI's
    ``<root>/<experiment>/<strategy>/<stamp>``: ``<root>/<experiment>/scratch/*``); pairing then decides.
    """
    run_dir = Path(run_dir).resolve()
    candidates = {*run_dir.parent.glob("*/result.json"), *run_dir.parent.parent.glob("*/*/result.json")}
    found = []
    for path in sorted(candidates):
        if path.parent == run_dir:
            continue
        r = load_result(path)
        if r is not None and r.get("strategy") == baseline:
            found.append(r)
    return found

