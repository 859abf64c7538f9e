"""Does the ranking predict fine-tuning? A ``rank.json`` against the measured ``result.json`` files.

``lit-transfer report DIR`` adds :func:`report_section` to its files when ``DIR/rank.json`` exists (or
``--rank FILE``): each candidate is matched to the fine-tuning runs that started from it (``result.json``
``weights``, read by :func:`lit_transfer.plan.weights.parse_weights`), their target test accuracy is averaged
over seeds, and for every score the Kendall tau, Spearman rho and Pearson r between score and accuracy are
reported (per strategy), with the accuracy lost by picking the top-scored candidate instead of the best one
(regret). A plot shows score vs accuracy per metric.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
from collections import defaultdict
from pathlib import Path
from typing import Any, Optional

from lit_transfer.figures import save_figure, slug_of
from lit_transfer.plan.weights import File, parse_weights
from lit_transfer.report.inputs import SOURCE_STAGE
from lit_transfer.report.render import Section
from lit_transfer.results import accuracy
from lit_transfer.stats import mean_ci

METRIC_ORDER = ("logme", "leep", "nce", "hscore", "hscore_raw")

__all__ = ["compare", "markdown", "plot", "report_section", "correlations"]


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.realpath(a) == os.path.realpath(b) or os.path.samefile(a, b)  # hard links too
    except (TypeError, ValueError, OSError):
        return False


def matches(candidate: dict, result: dict) -> bool:
    """Whether a run started from this candidate: same weights file (or same run directory), or the same kind of
    non-file weights (random init; the hub's, however the config spelled it) of the same architecture."""
    weights, used = parse_weights(candidate.get("weights")), parse_weights(result.get("weights"))
    if result.get("backbone") != candidate.get("backbone") or type(weights) is not type(used):
        return False
    if not isinstance(weights, File):
        return True
    if _same_file(str(weights), str(used)):
        return True
    run_dir = (candidate.get("source") or {}).get("run_dir")
    return bool(run_dir) and Path(run_dir).name in used.path.parts  # a moved sweep folder


def correlations(score: list[float], acc: list[float]) -> dict:
    """Kendall tau(-b), Spearman rho, Pearson r (with p-values) and top-1 regret of ``score`` for ``acc``."""
    from scipy import stats

    n = len(score)
    out: dict[str, Any] = {"n": n}
    if n >= 3 and len(set(score)) > 1 and len(set(acc)) > 1:
        tau = stats.kendalltau(score, acc)
        rho = stats.spearmanr(score, acc)
        r = stats.pearsonr(score, acc)
        out.update(kendall_tau=float(tau.statistic), kendall_p=float(tau.pvalue),
                   spearman_rho=float(rho.statistic), pearson_r=float(r.statistic), pearson_p=float(r.pvalue))
    else:
        out.update(kendall_tau=None, kendall_p=None, spearman_rho=None, pearson_r=None, pearson_p=None)
    if n:
        top = max(range(n), key=lambda i: score[i])
        out.update(top1_acc=acc[top], best_acc=max(acc), regret=max(acc) - acc[top])
    return out


def compare(payload: dict, results: list[dict]) -> dict:
    """Per strategy: candidate rows (scores, predicted rank, mean accuracy) and per-metric correlations."""
    cands = payload.get("candidates") or []
    metrics = [m for m in METRIC_ORDER if cands and all(m in c.get("scores", {}) for c in cands)]
    by_strategy: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in results:
        if r.get("strategy") == SOURCE_STAGE or accuracy(r) is None:
            continue
        for i, c in enumerate(cands):
            if matches(c, r):
                by_strategy[str(r.get("strategy"))][i].append(accuracy(r))
                break
    section: dict[str, Any] = {"metric": payload.get("metric", "logme"), "metrics": metrics, "strategies": {},
                               "unmatched": []}
    matched_any = set()
    for strategy, accs in sorted(by_strategy.items()):
        idx = sorted(accs)
        matched_any.update(idx)
        rows = []
        for i in idx:
            mean, half = mean_ci(accs[i])
            c = cands[i]
            rows.append({"label": c.get("label", c.get("candidate")), "candidate": c.get("candidate"),
                         "scores": {m: c["scores"][m] for m in metrics}, "acc_mean": mean,
                         "acc_ci": None if math.isnan(half) else half, "n": len(accs[i])})
        for m in metrics:  # ranks among the matched candidates
            order = sorted(range(len(rows)), key=lambda j: -rows[j]["scores"][m])
            for pos, j in enumerate(order, 1):
                rows[j].setdefault("predicted_rank", {})[m] = pos
        for pos, j in enumerate(sorted(range(len(rows)), key=lambda j: -rows[j]["acc_mean"]), 1):
            rows[j]["measured_rank"] = pos
        acc = [r["acc_mean"] for r in rows]
        section["strategies"][strategy] = {
            "rows": sorted(rows, key=lambda r: r["predicted_rank"][section["metric"]] if metrics else 0),
            "correlations": {m: correlations([r["scores"][m] for r in rows], acc) for m in metrics},
        }
    section["unmatched"] = [c.get("label", c.get("candidate")) for i, c in enumerate(cands) if i not in matched_any]
    return section


def _f(x: Optional[float], fmt: str = "{:+.2f}") -> str:
    return "—" if x is None else fmt.format(x)


def markdown(section: dict) -> str:
    metric, metrics = section["metric"], section["metrics"]
    lines = ["## Transferability ranking vs fine-tuned accuracy", ""]
    if not section["strategies"]:
        lines.append("No fine-tuning result starts from a ranked candidate (matched on result.json `weights`).")
    for strategy, part in section["strategies"].items():
        lines += [f"Strategy `{strategy}`; candidates sorted by `{metric}` (predicted rank 1 = highest score):", "",
                  "| predicted rank | candidate | " + " | ".join(metrics)
                  + " | fine-tuned target acc % | n | measured rank |",
                  "|" + "---|" * (len(metrics) + 5)]
        for r in part["rows"]:
            ci = f" ± {100 * r['acc_ci']:.1f}" if r["acc_ci"] is not None else ""
            lines.append(f"| {r['predicted_rank'][metric]} | {r['label']} | "
                         + " | ".join(f"{r['scores'][m]:.4f}" for m in metrics)
                         + f" | {100 * r['acc_mean']:.1f}{ci} | {r['n']} | {r['measured_rank']} |")
        lines += ["", "| score | Kendall τ | p | Spearman ρ | Pearson r | p | top-1 acc % | best acc % | regret (pp) |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for m, c in part["correlations"].items():
            lines.append(f"| {m}{' (ranked by)' if m == metric else ''} | {_f(c['kendall_tau'])} | "
                         f"{_f(c['kendall_p'], '{:.2g}')} | {_f(c['spearman_rho'])} | {_f(c['pearson_r'])} | "
                         f"{_f(c['pearson_p'], '{:.2g}')} | {_f(100 * c['top1_acc'], '{:.1f}')} | "
                         f"{_f(100 * c['best_acc'], '{:.1f}')} | {_f(100 * c['regret'], '{:.1f}')} |")
        lines.append("")
    if section["unmatched"]:
        lines.append(f"- note: no fine-tuning results for {len(section['unmatched'])} ranked candidate(s): "
                     + ", ".join(section["unmatched"]))
    return "\n".join(lines) + "\n"


def plot(section: dict, out: Path) -> list[Path]:
    """One figure per strategy: fine-tuned accuracy (± CI) against each score, tau and r in the titles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    metrics = [m for m in section["metrics"] if m != "hscore_raw"]
    for strategy, part in section["strategies"].items():
        rows = part["rows"]
        if not rows or not metrics:
            continue
        fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 4.0), squeeze=False)
        for ax, m in zip(axes[0], metrics):
            x = [r["scores"][m] for r in rows]
            y = [100 * r["acc_mean"] for r in rows]
            e = [100 * (r["acc_ci"] or 0.0) for r in rows]
            ax.errorbar(x, y, yerr=e, fmt="o", capsize=3)
            for xi, yi, r in zip(x, y, rows):
                ax.annotate(str(r["predicted_rank"][m]), (xi, yi), textcoords="offset points", xytext=(4, 3),
                            fontsize=7)
            c = part["correlations"][m]
            ax.set_title(f"{m}: τ={_f(c['kendall_tau'])}, r={_f(c['pearson_r'])}", fontsize=10)
            ax.set_xlabel(f"{m} (label: predicted rank)")
            ax.grid(True, alpha=0.3)
        axes[0][0].set_ylabel(f"fine-tuned target acc % ({strategy})")

        paths.append(save_figure(fig, out / f"rank_vs_accuracy_{slug_of(strategy)}.png"))
    return paths


def report_section(rank_file: Path, results: list[dict], out: Path) -> Section:
    """The ranking check as a section of the report: its table (markdown, and as preformatted text in the HTML),
    its figures written under ``out`` (with ``rank_vs_accuracy.json``); only a console note when ``rank_file``
    cannot be read."""
    try:
        payload = json.loads(Path(rank_file).read_text())
    except (OSError, ValueError) as err:
        return Section(console=f"- note: rank file {rank_file} left out: {type(err).__name__}: {err}\n")
    section = compare(payload, results)
    section["rank_file"] = str(rank_file)
    out.mkdir(parents=True, exist_ok=True)
    images = plot(section, out)
    text = markdown(section)
    (out / "rank_vs_accuracy.json").write_text(json.dumps(section, indent=2) + "\n")
    page = "<h2>Transferability ranking vs fine-tuned accuracy</h2><pre>" + html.escape(text) + "</pre>" + "".join(
        f"<img alt='{p.stem}' src='data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}'>"
        for p in images)
    return Section(markdown=text + "".join(f"\n![{p.stem}]({p.name})\n" for p in images), html=page, console=text)
