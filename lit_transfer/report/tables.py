"""The report's tables as text cells: the comparison table, the source-stage table and report.md's body
(markdown); the HTML page and W&B take the same cells."""

from __future__ import annotations

__all__ = ["table", "STAGE_HEADER", "stage_table", "markdown"]


def _pct(mean: float | None, half: float | None = None, signed: bool = False) -> str:
    """``mean ± half`` in percent; an interval that would leave the metric's range (accuracies 0–100, signed
    differences of accuracies −100–+100: few seeds give wide t-intervals) is shown clipped, as ``[low, high]``."""
    if mean is None:
        return ""
    text = f"{100 * mean:+.1f}" if signed else f"{100 * mean:.1f}"
    if half is None:
        return text
    lo, hi = (-1.0, 1.0) if signed else (0.0, 1.0)
    if mean - half < lo or mean + half > hi:
        fmt = "{:+.1f}" if signed else "{:.1f}"
        return f"{text} [{fmt.format(100 * max(lo, mean - half))}, {fmt.format(100 * min(hi, mean + half))}]"
    return f"{text} ± {100 * half:.1f}"


def _wall(r: dict) -> str:
    """Own wall time (training and testing), plus the time spent training or waiting for the source stage."""
    if r.get("wall_time_s") is None:
        return ""
    wait = r.get("stage_wait_s")
    return f"{r['wall_time_s']:.1f}" + (f" (+{wait:.1f})" if wait else "")


def _labels(r: dict) -> str:
    train, val = r.get("labels_target_train"), r.get("labels_target_val")
    return "" if train is None or val is None else f"{train:.0f}+{val:.0f}"


def _converged(r: dict) -> str:
    up, unchecked = r.get("still_improving") or 0, r.get("convergence_unchecked") or 0
    if up:
        return f"**NO** ({up}/{r['n']} still improving)"
    return f"unchecked ({unchecked}/{r['n']})" if unchecked else "yes"


def table(summary: dict) -> tuple[list[str], list[list[str]]]:
    """The comparison table: its header and one row of cells per summary row."""
    base, conf = summary["baseline"], round(100 * summary["conf"])
    header = ["experiment", "strategy", "selection", "backbone", "weights", "input", "shots", "n",
              "target labels (train+val)", "lr (× seeds)",
              "converged", f"target acc % ({conf}% CI)", f"gain vs {base} (pp)", "p", "p Holm", "pairs",
              "negative transfer",
              "source acc before → after", "forgetting (pp)", "own s (+ source stage)", "train img/s", "trainable params"]
    body = []
    for r in summary["rows"]:
        src = (f"{_pct(r['source_before'])} → {_pct(r['source_after'])}" if r.get("source_before") is not None
               else "")
        body.append([
            r["experiment"], r["strategy"], r.get("selection") or "", r.get("backbone") or "",
            r.get("weights_origin") or "", r.get("input_size") or "",
            "all" if r["target_shots"] is None else str(r["target_shots"]),
            str(r["n"]), _labels(r), r.get("lr_chosen") or "", _converged(r), _pct(r["acc_mean"], r["acc_ci"]),
            (_pct(r.get("gain_mean"), r.get("gain_ci"), signed=True)
             + ("" if r.get("gain_claimed", True) else " (not claimed)")) if "gain_mean" in r else "—",
            f"{r['gain_p']:.3g}" if r.get("gain_p") is not None else "",
            f"{r['gain_p_holm']:.3g}" if r.get("gain_p_holm") is not None else "",
            str(r.get("pairs", "")), "**YES**" if r.get("negative_transfer") else "",
            src, _pct(r.get("forgetting"), r.get("forgetting_ci"), signed=True),
            _wall(r),
            f"{r['train_images_per_s']:.0f}" if r.get("train_images_per_s") is not None else "",
            f"{r['trainable_params']:,}" if r.get("trainable_params") is not None else "",
        ])
    return header, body


STAGE_HEADER = ["experiment", "backbone", "input", "n (seeds)", "checkpoint", "source acc %",
                "target acc % (no target training)", "used by"]


def stage_table(summary: dict) -> list[list[str]]:
    """The source-stage table's cells (markdown and HTML)."""
    return [[s["experiment"], s.get("backbone") or "", s.get("input_size") or "",
             f"{s['n']} ({', '.join(map(str, s.get('seeds') or []))})", s.get("checkpoint") or "",
             _pct(s["source_acc_mean"], s["source_acc_ci"]), _pct(s["target_acc_mean"], s["target_acc_ci"]),
             ", ".join(s.get("used_by") or []) or "no row"] for s in summary["stages"]]


def markdown(summary: dict) -> str:
    """The comparison table, the source-stage table and the notes, as markdown (report.md and the console)."""
    header, body = table(summary)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    if summary["stages"]:
        lines += ["", "Source stages (models trained on the source, before any target training, one per seed unless "
                  "run.source_seed is set; the rows named under \"used by\" loaded exactly these checkpoints, so "
                  "their \"source acc before\" is these models):", "",
                  "| " + " | ".join(STAGE_HEADER) + " |", "|" + "---|" * len(STAGE_HEADER)]
        lines += ["| " + " | ".join(cells) + " |" for cells in stage_table(summary)]
    if summary["notes"]:
        lines += [""] + [f"- note: {n}" for n in summary["notes"]]
    return "\n".join(lines) + "\n"
