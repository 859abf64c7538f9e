"""The report's figures (PNG files): accuracy vs labelled examples, paired gain over the baseline and accuracy
vs training steps, per experiment."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from lit_transfer.figures import save_figure, slug_of
from lit_transfer.report.inputs import shots_key

__all__ = ["plots", "curve_plots"]


def _accuracy_vs_shots(plt, exp: str, rows: list[dict], conf: float, path: Path) -> Path:
    """Target test accuracy against labelled target examples per class, one line per strategy."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    all_shots: set = set()
    for strategy in dict.fromkeys(r["label"] for r in rows):
        pts = sorted((r for r in rows if r["label"] == strategy and r["target_shots"] is not None),
                     key=lambda r: r["target_shots"])
        if not pts:
            continue
        x = [r["target_shots"] for r in pts]
        y = [100 * r["acc_mean"] for r in pts]
        half = [100 * (r["acc_ci"] or 0.0) for r in pts]
        bars = ax.errorbar(x, y, yerr=half, marker="o", capsize=3, label=strategy)
        ax.fill_between(x, [a - h for a, h in zip(y, half)], [a + h for a, h in zip(y, half)],
                        color=bars[0].get_color(), alpha=0.15)
        all_shots.update(x)
    ax.set_xscale("log")
    if all_shots:  # label the measured shot counts, not just powers of ten
        ax.set_xticks(sorted(all_shots), [str(v) for v in sorted(all_shots)])
        ax.minorticks_off()
    ax.set_ylim(max(0, ax.get_ylim()[0]), min(100, ax.get_ylim()[1]))
    ax.set_xlabel("labelled target examples per class")
    ax.set_ylabel("target test accuracy (%)")
    ax.set_title(f"{exp}: accuracy vs labels ({round(100 * conf)}% CI)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plots(summary: dict, out: Path) -> list[Path]:
    """Accuracy vs labelled examples per class (log x, CI bands) and gain over the baseline, per experiment."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    rows_by_exp: dict[str, list[dict]] = defaultdict(list)
    for r in summary["rows"]:
        rows_by_exp[r["experiment"]].append(r)
    for exp, rows in rows_by_exp.items():
        slug = slug_of(exp)
        if any(r["target_shots"] is not None for r in rows):  # DA rows (all labels or none) have no such axis
            paths.append(_accuracy_vs_shots(plt, exp, rows, summary["conf"], out / f"accuracy_vs_shots_{slug}.png"))
        gains = [r for r in rows if r.get("gain_mean") is not None]
        if not gains:
            continue
        strategies = list(dict.fromkeys(r["label"] for r in gains))
        shots = sorted({r["target_shots"] for r in gains}, key=shots_key)
        width = 0.8 / len(shots)
        hatched: list = []
        fig, ax = plt.subplots(figsize=(max(6.5, 1.1 * len(strategies) * len(shots)), 4.2))
        for j, n in enumerate(shots):
            xs, ys, es, hatches = [], [], [], []
            for i, s in enumerate(strategies):
                r = next((r for r in gains if r["label"] == s and r["target_shots"] == n), None)
                if r is None:
                    continue
                xs.append(i - 0.4 + width * (j + 0.5))
                ys.append(100 * r["gain_mean"])
                es.append(100 * (r["gain_ci"] or 0.0))
                hatches.append(("//" if r.get("negative_transfer") else "", r.get("gain_claimed", True)))
            bars = ax.bar(xs, ys, width, yerr=es, capsize=3, label=f"{'all' if n is None else n} shots")
            hatched += list(zip(bars, hatches))
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(strategies)), strategies, rotation=20)
        ax.set_ylabel(f"gain over {summary['baseline']} (pp)")
        ax.set_title(f"{exp}: paired gain over {summary['baseline']}\n(hatched: negative transfer; pale: not "
                     "claimed, a run had not converged)", fontsize=10)
        ax.legend(fontsize=8)
        for bar, (hatch, claimed) in hatched:  # after the legend, whose swatches would copy the first bar's hatch
            bar.set_hatch(hatch)
            if not claimed:
                bar.set_alpha(0.3)
        paths.append(save_figure(fig, out / f"gain_over_{slug_of(summary['baseline'])}_{slug}.png"))
    paths += curve_plots(summary, out)
    return paths


def curve_plots(summary: dict, out: Path) -> list[Path]:
    """Target val accuracy vs optimizer steps per strategy (mean over the reported runs), one panel per shots:
    "transfer learns faster" (the left part) and "transfer ends higher, or not" (the right end)."""
    import matplotlib.pyplot as plt

    paths = []
    by_exp: dict[str, list[dict]] = defaultdict(list)
    for c in summary.get("curves") or []:
        by_exp[c["experiment"]].append(c)
    for exp, curves in by_exp.items():
        shots = sorted({c["target_shots"] for c in curves}, key=shots_key)
        fig, axes = plt.subplots(1, len(shots), figsize=(5.2 * len(shots), 3.8), squeeze=False, sharey=True)
        for ax, n in zip(axes[0], shots):
            for c in (c for c in curves if c["target_shots"] == n):
                pts = [(s, 100 * m) for s, m in zip(c["steps"], c["mean"]) if m is not None]
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", label=f"{c['strategy']} (n={c['n']})")
            ax.set_title(f"{'all' if n is None else n} labelled examples per class")
            ax.set_xlabel("optimizer steps")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=7)
        axes[0][0].set_ylabel("target val accuracy (%)")
        fig.suptitle(f"{exp}: accuracy vs training budget")
        paths.append(save_figure(fig, out / f"accuracy_vs_steps_{slug_of(exp)}.png"))
    return paths
