"""Label-free model-selection scores for unsupervised DA, computed on the target validation *images* only.

- ``im_score`` (information maximisation): ``H(mean p) − mean H(p)``: confident and class-diverse predictions.
- ``snd_score`` (soft neighborhood density, Saito et al., ICCV 2021): L2-normalised softmax outputs of the
  target val images, their cosine similarities (self-pairs excluded) scaled by ``1/τ`` (τ = 0.05) and
  softmax-normalised per row; the score is the mean entropy of those rows: high when predictions form dense
  neighbourhoods (clusters), low for a collapsed or scattered model.

Both are logged every validation epoch of an unsupervised-DA run (``target/val_im_score``, ``target/val_snd``)
and can select checkpoints (``model.selection: entropy`` or ``snd``).
"""

from __future__ import annotations

import torch

__all__ = ["im_score", "snd_score"]


def _entropy(p: torch.Tensor) -> torch.Tensor:
    return -(p * p.clamp_min(1e-12).log()).sum(-1)


def im_score(probs: torch.Tensor) -> torch.Tensor:
    probs = probs.float()
    return _entropy(probs.mean(0)) - _entropy(probs).mean()


def snd_score(probs: torch.Tensor, tau: float = 0.05, max_n: int = 2000) -> torch.Tensor:
    """Mean row entropy of the self-excluded, temperature-scaled similarity softmax (first ``max_n`` rows)."""
    p = torch.nn.functional.normalize(probs[:max_n].float(), dim=1)
    sim = p @ p.T
    sim.fill_diagonal_(float("-inf"))
    return _entropy(torch.softmax(sim / tau, dim=1)).mean()


# --------------------------------------------------------------------------------- against the oracle
CRITERIA = {"entropy (IM)": "target/val_im_score", "snd": "target/val_snd", "source val acc": "source/val_acc"}


def compare_with_oracle(root: str) -> str:
    """For every run under ``root`` (its ``logs/metrics.csv``): the target val accuracy of the epoch each
    label-free criterion would select, of the last epoch, and the oracle's (best target val accuracy), as a
    markdown table of means over runs per strategy. Ties go to the earliest epoch, as in checkpointing.

        python -m lit_transfer.strategies.selection sweep_runs/digits_m_da
    """
    import csv
    import json
    from collections import defaultdict
    from pathlib import Path

    table: dict[str, list[dict]] = defaultdict(list)
    for path in sorted(Path(root).rglob("metrics.csv")):
        result = path.parent.parent / "result.json"
        if not result.is_file():
            continue
        strategy = json.loads(result.read_text()).get("strategy", "?")
        rows = [r for r in csv.DictReader(path.open()) if r.get("target/val_acc")]
        if not rows or not all(r.get(k) for r in rows for k in CRITERIA.values()):
            continue
        acc = [float(r["target/val_acc"]) for r in rows]

        def pick(key: str) -> float:
            scores = [float(r[key]) for r in rows]
            return acc[max(range(len(rows)), key=lambda i: (scores[i], -i))]

        table[strategy].append({**{name: pick(key) for name, key in CRITERIA.items()}, "last epoch": acc[-1],
                                "oracle": max(acc)})
    cols = [*CRITERIA, "last epoch", "oracle"]
    lines = ["| strategy | runs | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    for strategy, runs in sorted(table.items()):
        means = [100 * sum(r[c] for r in runs) / len(runs) for c in cols]
        lines.append(f"| {strategy} | {len(runs)} | " + " | ".join(f"{m:.1f}" for m in means) + " |")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    import sys

    print(compare_with_oracle(sys.argv[1] if len(sys.argv) > 1 else "sweep_runs"))
