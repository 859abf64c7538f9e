"""Stratified, deterministic train/val/test splits and nested few-shot subsets.

Every permutation comes from a generator seeded by ``(split_seed, purpose, class)`` only: splits are the
same for every strategy and training seed, and adding or relabelling classes leaves the others unchanged.
Splits are drawn on the dataset's *original* labels, so a source and a target built from the same dataset
(digits → rotated digits) share them and neither stage ever trains on an image whose twin is in test.
"""

from __future__ import annotations

import torch

from .common import generator
from lit_transfer.errors import TransferConfigError


def _per_class(indices: torch.Tensor, labels: torch.Tensor, purpose: str, split_seed: int):
    """Yield ``(class, indices of that class in a seeded random order)``."""
    indices = indices.sort().values
    for c in labels[indices].unique().tolist():
        idx = indices[labels[indices] == c]
        yield c, idx[torch.randperm(len(idx), generator=generator(split_seed, purpose, c))]


def _carve(indices, labels, fractions: list[float], split_seed: int, purpose: str) -> list[torch.Tensor]:
    """Split ``indices`` into ``len(fractions)`` stratified parts plus the rest (last)."""
    parts: list[list[torch.Tensor]] = [[] for _ in range(len(fractions) + 1)]
    for _, idx in _per_class(indices, labels, purpose, split_seed):
        start = 0
        for part, frac in zip(parts, fractions):
            stop = start + round(len(idx) * frac)
            part.append(idx[start:stop])
            start = stop
        parts[-1].append(idx[start:])
    return [torch.cat(p).sort().values if p else torch.empty(0, dtype=torch.long) for p in parts]


def split_domain(
    labels: torch.Tensor, official: dict[str, torch.Tensor], split_seed: int, val_fraction: float, test_fraction: float
) -> dict[str, torch.Tensor]:
    """``{"train", "val", "test"}`` indices: official splits where the dataset has them, else stratified carving."""
    if "test" not in official:
        test, val, train = _carve(torch.arange(len(labels)), labels, [test_fraction, val_fraction], split_seed, "split")
        return {"train": train, "val": val, "test": test}
    if "val" in official:
        return {k: official[k] for k in ("train", "val", "test")}
    val, train = _carve(official["train"], labels, [val_fraction], split_seed, "val")
    return {"train": train, "val": val, "test": official["test"]}


def map_labels(labels: torch.Tensor, label_map: dict[int, int] | None) -> torch.Tensor:
    """Apply ``label_map`` (original → new); classes it leaves out become -1 (dropped)."""
    if label_map is None:
        return labels
    lut = torch.full((int(labels.max()) + 1,), -1, dtype=torch.long)
    for old, new in label_map.items():
        if int(old) < len(lut):
            lut[int(old)] = int(new)
    return lut[labels]


def take_shots(
    train: torch.Tensor, labels: torch.Tensor, shots: int | None, num_classes: int, seed: int, what: str,
    at_most: bool = False, absent: set[int] | frozenset = frozenset(),
) -> torch.Tensor:
    """The first ``shots`` of a fixed per-class permutation: for one seed, 5 shots ⊂ 20 shots.

    ``at_most``: a class with fewer examples gives all it has instead of an error. ``absent``: classes the
    domain has no images of at all (a target without some of the shared classes): not an error.
    """
    if shots is None:
        return train
    counts = torch.bincount(labels[train], minlength=num_classes)
    for c in range(num_classes):
        if counts[c] < shots and not at_most and c not in absent:
            where = "target val split" if what == "val_shots" else f"{what.split('_')[0]} domain"
            kind = "validation" if what == "val_shots" else "training"
            raise TransferConfigError(f"{what}={shots} but class {c} of the {where} has only {int(counts[c])} "
                                      f"{kind} examples; lower {what} or use null for all.")
    purpose = "val_shots" if what == "val_shots" else "shots"  # val draws are independent of train draws
    chosen = [idx[:shots] for _, idx in _per_class(train, labels, purpose, seed)]
    return torch.cat(chosen).sort().values if chosen else train[:0]  # an empty split stays empty


def draw_splits(
    original: torch.Tensor, official: dict[str, torch.Tensor], labels: torch.Tensor, role: str, num_classes: int,
    *, split_seed: int, val_fraction: float, test_fraction: float, shots: int | None, shots_seed: int,
    val_shots: int | str | None, test_per_class: int | None, absent: set[int],
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One domain's ``(whole train split, {"train", "val", "test"} indices)``: split on the ``original`` labels,
    examples whose mapped ``labels`` are dropped (-1) left out, then the labelled examples drawn: ``shots`` per
    class for train (seeded by ``shots_seed``), at most ``test_per_class`` for test (by ``split_seed``: every
    run is tested on the same images) and, for the target, ``val_shots`` for val (``"auto"``: as many as
    ``shots``, fewer where a class has fewer)."""
    splits = split_domain(original, official, split_seed, val_fraction, test_fraction)
    splits = {k: v[labels[v] >= 0] for k, v in splits.items()}
    whole_train = splits["train"]
    splits["train"] = take_shots(whole_train, labels, shots, num_classes, shots_seed, f"{role}_shots", absent=absent)
    if test_per_class is not None:
        splits["test"] = take_shots(splits["test"], labels, test_per_class, num_classes, split_seed,
                                    "test_per_class", at_most=True)
    if role == "target" and val_shots is not None:
        auto = val_shots == "auto"
        splits["val"] = take_shots(splits["val"], labels, shots if auto else val_shots, num_classes, shots_seed,
                                   "val_shots", at_most=auto, absent=absent)
    return whole_train, splits
