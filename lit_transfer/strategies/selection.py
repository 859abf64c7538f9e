"""Label-free model-selection scores for unsupervised DA, computed on the target validation *images* only.

- ``im_score`` (information maximisation): ``H(mean p) − mean H(p)``: confident and class-diverse predictions.
- ``snd_score`` (soft neighborhood density, Saito et al., ICCV 2021): L2-normalised softmax outputs of the
  target val images, their cosine similarities (self-pairs excluded) scaled by ``1/τ`` (τ = 0.05) and
  softmax-normalised per row; the score is the mean entropy of those rows: high when predictions form dense
  neighbourhoods (clusters), low for a collapsed or scattered model.

- ``dev_risk`` (deep embedded validation, You et al., ICML 2019): the source val loss importance-weighted
  by the density ratio ``p_t(f)/p_s(f)`` of the features, estimated with a logistic domain classifier on source
  val vs target val features (out-of-fold: each source example is weighted by a classifier that did not see
  it), with the paper's control variate. Lower is better; it reads source labels, never target labels.

All three are logged every validation epoch of an unsupervised-DA run (``target/val_im_score``,
``target/val_snd``, ``target/val_dev_risk``) and can select checkpoints (``model.selection: entropy``, ``snd``
or ``dev``).
"""

from __future__ import annotations

import torch

__all__ = ["im_score", "snd_score", "dev_risk", "density_ratio"]


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


def density_ratio(source: torch.Tensor, target: torch.Tensor, folds: int = 5) -> torch.Tensor:
    """``p_t(x)/p_s(x)`` at each source row: a logistic domain classifier on standardised features, out-of-fold.

    ``d`` = P(target | x) from a classifier fitted without the row's fold; the ratio is
    ``(n_s / n_t) · d / (1 − d)`` (Bayes' rule with the sample sizes as priors), ``d`` clipped to [1e-3, 1 − 1e-3].
    """
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import StandardScaler

    xs, xt = source.double().cpu().numpy(), target.double().cpu().numpy()
    x = StandardScaler().fit_transform(np.concatenate([xs, xt]))
    y = np.r_[np.zeros(len(xs)), np.ones(len(xt))]
    d = np.empty(len(xs))
    k = max(2, min(folds, len(xs), len(xt)))
    for fit_idx, held in StratifiedKFold(k, shuffle=True, random_state=0).split(x, y):
        clf = LogisticRegression(C=1.0, max_iter=1000).fit(x[fit_idx], y[fit_idx])
        src = held[held < len(xs)]
        d[src] = clf.predict_proba(x[src])[:, 1]
    d = d.clip(1e-3, 1 - 1e-3)
    return torch.from_numpy(len(xs) / len(xt) * d / (1 - d))


def dev_risk(source_losses: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """DEV's target-risk estimate from per-example source val losses and their density ratios ``w``:
    ``mean(w·l) + η·mean(w) − η`` with the control variate ``η = −Cov(w·l, w) / Var(w)``."""
    loss, w = source_losses.double().cpu(), weights.double().cpu()
    weighted = w * loss
    var = w.var(unbiased=True)
    if len(w) < 2 or not var > 0:
        return weighted.mean()
    eta = -((weighted - weighted.mean()) * (w - w.mean())).sum() / (len(w) - 1) / var
    return weighted.mean() + eta * w.mean() - eta


# --------------------------------------------------------------------------------- against the oracle
CRITERIA = {"entropy (IM)": ("target/val_im_score", 1), "snd": ("target/val_snd", 1),
            "dev": ("target/val_dev_risk", -1), "source val acc": ("source/val_acc", 1)}


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
        if not rows:
            continue
        acc = [float(r["target/val_acc"]) for r in rows]

        def pick(key: str, sign: int) -> float:
            if not all(r.get(key) for r in rows):  # runs from before a criterion was logged
                return float("nan")
            scores = [sign * float(r[key]) for r in rows]
            return acc[max(range(len(rows)), key=lambda i: (scores[i], -i))]

        table[strategy].append({**{name: pick(*how) for name, how in CRITERIA.items()}, "last epoch": acc[-1],
                                "oracle": max(acc)})
    cols = [*CRITERIA, "last epoch", "oracle"]
    lines = ["| strategy | runs | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    for strategy, runs in sorted(table.items()):
        means = [100 * sum(r[c] for r in runs) / len(runs) for c in cols]
        lines.append(f"| {strategy} | {len(runs)} | " + " | ".join("–" if m != m else f"{m:.1f}" for m in means) + " |")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    from lit_transfer.plan.command_line import process_args

    print(compare_with_oracle((process_args() or ["sweep_runs"])[0]))
