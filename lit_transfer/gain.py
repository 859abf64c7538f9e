"""Transfer gain over a baseline: the one pairing rule used by ``lit-transfer report`` and by W&B summaries.

A run is compared only with baseline runs of the same experiment that trained on the same labelled examples:
the same seed, the same number of target shots and the same ``split_hash``. Several matching baseline runs
(e.g. repeats) are averaged. Gains are in accuracy units (0.05 = 5 percentage points).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Mapping

from lit_transfer.results import Result, accuracy

__all__ = ["PAIR_KEYS", "pair_key", "paired_baselines", "transfer_gain", "load_result", "find_baselines"]

PAIR_KEYS = ("experiment", "seed", "target_shots", "split_hash")


def pair_key(result: Mapping) -> tuple:
    """What must be equal for two runs to be compared: experiment, seed, target shots and labelled split."""
    return tuple(result.get(k) for k in PAIR_KEYS)


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


def load_result(path: str | os.PathLike) -> Result | None:
    """A successful ``result.json`` (upgraded to the current schema); ``None`` if unreadable or a failed run's."""
    r = Result.read(path)
    return r if r is not None and r.ok else None


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

