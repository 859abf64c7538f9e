"""`lit-transfer report DIR`: does transfer beat scratch, by how much, and can you trust it?

Aggregates every result.json under DIR into per-(experiment, strategy, target_shots) rows: target accuracy with
a t-interval over seeds, the gain over the baseline paired on (seed, shots, split_hash), a paired t-test, a
negative-transfer flag (gain CI entirely below zero), forgetting on the source, wall time and trainable
parameters. Writes report.md, a self-contained report.html, summary.csv/summary.json and PNG plots.
"""

from __future__ import annotations

import argparse
import base64
import csv
import html
import io
import json
import math
import os
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

from lit_transfer import atomic
from lit_transfer.figures import save_figure, slug_of
from lit_transfer.claims import STABLE_RULE, stable_gain
from lit_transfer.convergence import DRIFT
from lit_transfer.gain import paired_baselines, transfer_gain
from lit_transfer.results import upgrade
from lit_transfer.stats import holm, mean_ci, paired_gain

PROG = "lit-transfer report"
ACC = "target/test_acc"
VAL_ACC = "target/val_acc"  # the curve the stability rule reads
SOURCE_STAGE = "source"


class ReportError(ValueError):
    """Bad report input; printed as one line."""


def collect(root: str | os.PathLike) -> tuple[list[dict], list[str]]:
    """All successful results under `root` (recursive), plus notes about files that were left out."""
    results, notes = [], []
    for path in sorted(Path(root).rglob("result.json")):
        try:
            r = json.loads(path.read_text())
        except (OSError, ValueError):
            notes.append(f"unreadable result left out: {path}")
            continue
        if not isinstance(r, dict) or r.get("status", "ok") != "ok":
            status, why = (r.get("status"), r.get("error")) if isinstance(r, dict) else ("?", None)
            notes.append(f"{status} run left out of the means: {path}" + (f" ({why})" if why else ""))
            continue
        r["_path"] = str(path)
        results.append(upgrade(r))  # older files: a label-free selection score stored as val_acc
    return results, notes


def _acc(r: dict, key: str = ACC) -> float | None:
    v = (r.get("metrics") or {}).get(key)
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def _loaded_stage(r: dict, stage_names: Iterable[str]) -> str | None:
    """The run dir name of the source stage whose checkpoint run ``r`` loaded, if it is among ``stage_names``."""
    if not isinstance(r.get("weights"), str):
        return None
    parts = Path(r["weights"]).parts
    return next((name for name in stage_names if name in parts), None)


def _source_before_after(r: dict, stage_source: dict[str, float | None]) -> tuple[float, float] | None:
    """Source accuracy before/after target training: explicit metrics, else the loaded stage's and this run's."""
    before, after = _acc(r, "source/test_acc_before"), _acc(r, "source/test_acc_after")
    if before is None:
        stage = _loaded_stage(r, stage_source)
        before = stage_source.get(stage) if stage else None
    if after is None and before is not None:
        after = _acc(r, "source/test_acc")
    return (before, after) if before is not None and after is not None else None


def weights_origin(r: dict) -> str:
    """Where a run's backbone weights came from: ``random``, ``source stage``, ``pretrained (hub)``,
    ``pretrained (package)`` (weights an installed package ships, :mod:`lit_transfer.models.packaged`) or ``file``; results written before ``weights_origin`` was recorded are read from
    their ``weights`` value."""
    origin = r.get("weights_origin")
    if origin is None:
        w = r.get("weights")
        if w is None:
            return "random"
        if str(w).lower() in ("pretrained", "hub", "imagenet"):
            return "pretrained (hub)"
        return "source stage" if "-source-" in str(w) else "file"
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


def _correct_for_multiplicity(rows: list[dict], conf: float) -> list[str]:
    """Holm-correct the p-values of every claimable gain in the report (converged rows with a paired test):
    ``gain_p_holm``; a negative-transfer flag (or a significant gain, ``gain_significant``) then needs the corrected p
    below α = 1 − conf as well as its interval off zero. Ten rows at α = 0.05 would otherwise give a 40 % chance
    of at least one false flag."""
    family = [r for r in rows if r.get("gain_claimed") and isinstance(r.get("gain_p"), float)
              and math.isfinite(r["gain_p"])]
    if not family:
        return []
    alpha = 1 - conf
    for r, p in zip(family, holm([r["gain_p"] for r in family])):
        r["gain_p_holm"] = p
        r["negative_transfer"] = bool(r.get("negative_transfer")) and p < alpha
        r["gain_significant"] = bool(r.get("gain_low") is not None and r["gain_low"] > 0) and p < alpha
    borderline = [r for r in family if r["gain_p"] < alpha <= r["gain_p_holm"]]
    note = (f"p-values Holm-corrected over the {len(family)} claimable comparisons of this report (α = {alpha:g}): a "
            "gain or negative transfer is flagged only when its corrected p is below α")
    if borderline:
        note += (f"; {len(borderline)} row(s) with p < {alpha:g} before correction are not flagged ("
                 + ", ".join(f"{r['strategy']}/{r['backbone']}/shots={r['target_shots']}" for r in borderline[:6])
                 + (", …" if len(borderline) > 6 else "") + ")")
    return [note]


def _label_rows(rows: list[dict]) -> None:
    """``label``: the strategy's name, with the network named where an experiment compares several (the most
    common network of the experiment goes unnamed): ``scratch`` vs ``scratch (small_cnn)``."""
    by_exp: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_exp[r["experiment"]].append(r)
    for rs in by_exp.values():
        nets = [(r["backbone"], r["input_size"]) for r in rs]  # weights' origin is what strategies vary
        common = max(dict.fromkeys(nets), key=nets.count)
        for r, net in zip(rs, nets):
            differs = ([r["backbone"]] if net[0] != common[0] else []) + (
                [r["input_size"] or "?"] if net[1] != common[1] else [])
            r["label"] = f"{r['strategy']} ({', '.join(differs)})" if differs else r["strategy"]


def _shots_key(shots: Any) -> float:
    return math.inf if shots is None else float(shots)


def _nan_to_none(x: Any) -> Any:
    return None if isinstance(x, float) and math.isnan(x) else x


def selection_label(r: dict) -> str | None:
    """How a run chose its tested checkpoint: ``source val``/``target val`` (accuracy), ``entropy``, ``snd``,
    ``dev`` (label-free scores of target val images) or ``oracle``; ``None`` for results that do not record it."""
    sel = r.get("selection")
    if sel in ("auto", "source_val"):
        train_on = "source" if sel == "source_val" else str(r.get("train_on") or "target")
        return f"{'target' if train_on == 'source+target' else train_on} val"
    return sel


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


def mean_curve(rs: list[dict], key: str = "target/val_acc") -> dict | None:
    """Mean over runs of a logged validation curve, at the optimizer steps every run validated at."""
    curves = [r["curve"] for r in rs if isinstance(r.get("curve"), dict) and r["curve"].get(key)]
    if not curves:
        return None
    steps = sorted(set.intersection(*(set(c["step"]) for c in curves)))
    means = []
    for step in steps:
        vals = [c[key][c["step"].index(step)] for c in curves]
        vals = [v for v in vals if isinstance(v, (int, float))]
        means.append(sum(vals) / len(vals) if vals else None)
    return {"metric": key, "steps": steps, "mean": means, "n": len(curves)} if steps else None


def _unconverged(rs: list[dict]) -> tuple[int, int]:
    """(runs still improving at the end of their budget, runs whose curve was too short or missing to tell)."""
    flags = [((r.get("convergence") or {}).get("still_improving")) for r in rs]
    return sum(f is True for f in flags), sum(f is None for f in flags)


def _label_free(rs: list[dict]) -> bool:
    """Runs whose convergence was read from target val predictions (selected without target labels)."""
    return any((r.get("convergence") or {}).get("metric") == DRIFT for r in rs)


def _stable_gain(rs: list[dict], base: list[dict], conf: float):
    """The stability rule's paired gain (lit_transfer.claims) over each run's and its paired baseline's target
    val accuracy curves."""
    runs, bases = [], []
    for r in rs:
        paired = paired_baselines(r, base)
        if paired:
            runs.append(((r.get("curve") or {}).get(VAL_ACC)))
            bases.append(((paired[0].get("curve") or {}).get(VAL_ACC)))
    return stable_gain(runs, bases, conf)


def _code_notes(groups: dict[tuple, list[dict]]) -> list[str]:
    """Rows of one experiment compared across code versions, or run from modified code, are flagged: a gain
    between them measures the code change as well as the strategy. Runs that predate the record are silent."""
    notes = []
    for exp in sorted({k[0] for k in groups}):
        envs = [r.get("env") or {} for k, rs in groups.items() if k[0] == exp for r in rs]
        commits = sorted({e["git_commit"] for e in envs if e.get("git_commit")})
        if len(commits) > 1:
            notes.append(f"{exp}: runs from {len(commits)} lit_transfer commits ({', '.join(c[:7] for c in commits)}); "
                         "rows measured on different code are compared here: re-run them on one commit")
        dirty = sum(bool(e.get("git_dirty")) for e in envs)
        if dirty:
            notes.append(f"{exp}: {dirty} run(s) from uncommitted changes to lit_transfer/: the code behind "
                         "them cannot be recovered; commit, then re-run")
    return notes


def summarise(results: list[dict], baseline: str = "scratch", conf: float = 0.95, tune: bool = True) -> dict:
    """Pure aggregation: rows for the comparison table, source-stage rows and notes.

    Rows are per (experiment, strategy, shots, selection, backbone, weights' origin, input size): runs of
    different networks are never pooled, and a gain pairs a row only with baseline runs of the same backbone
    and input size (or, with ``baseline="STRATEGY@BACKBONE"``, that backbone's runs at the same input size).

    ``tune``: pick each strategy's best hyper-parameters per seed on validation (:func:`select_tuned`) before
    aggregating; otherwise runs that share a seed are pooled.
    """
    notes: list[str] = []
    if tune:
        results, notes = select_tuned(results)
    stages = [r for r in results if r.get("strategy") == SOURCE_STAGE]
    # A run that loaded a source stage's checkpoint has "before" = that stage's source accuracy.
    stage_source = {Path(str(s.get("run_dir"))).name: _acc(s, "source/test_acc") for s in stages if s.get("run_dir")}
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in results:
        if r.get("strategy") == SOURCE_STAGE:
            continue
        if _acc(r) is None:
            notes.append(f"no {ACC} in {r.get('_path', '?')}: left out")
            continue
        groups[(str(r.get("experiment")), str(r.get("strategy")), r.get("target_shots"), selection_label(r),
                *model_key(r))].append(r)

    notes += _code_notes(groups)
    base_strategy, base_backbone = parse_baseline(baseline)
    rows, curves = [], []
    # one network's rows together (scratch of the compared network, then the named baseline's, ...), by shots
    for key in sorted(groups, key=lambda k: (k[0], k[1] != base_strategy, k[1], k[4] != (base_backbone or k[4]),
                                             k[4], k[5], str(k[6]), _shots_key(k[2]), str(k[3]))):
        exp, strategy, shots, selection, backbone, origin, size = key
        rs = groups[key]
        seeds = [r.get("seed") for r in rs]
        if len(set(seeds)) < len(seeds):
            notes.append(f"{exp}/{strategy}/shots={shots}: several runs share a seed (e.g. an LR sweep); "
                         "they are pooled")
        acc_mean, acc_half = mean_ci([_acc(r) for r in rs], conf)
        row: dict[str, Any] = {"experiment": exp, "strategy": strategy, "target_shots": shots, "n": len(rs),
                               "acc_mean": acc_mean, "acc_ci": acc_half, "selection": selection,
                               "backbone": backbone, "weights_origin": origin, "input_size": size}
        # The baseline's runs of the compared network (same backbone, or the named one, and the same input size),
        # selected the same way if it was run so, else its only (or first) selection.
        want = base_backbone or backbone
        base_keys = sorted((k for k in groups if k[:3] == (exp, base_strategy, shots) and k[4] == want
                            and k[6] == size), key=lambda k: (k[3] != selection, str(k[3]), k[5]))
        base_key = base_keys[0] if base_keys else None
        base = groups.get(base_key) if base_key else None
        is_base = strategy == base_strategy and backbone == want
        if not is_base and not base and any(k[:3] == (exp, base_strategy, shots) for k in groups):
            notes.append(f"{exp}/{strategy}/{backbone}/shots={shots}: no {base_strategy} runs of {want} at "
                         f"{size or 'this input size'}: no gain is computed (runs of other networks never pair)")
        if not is_base and base:
            # lit_transfer.gain pairs runs (same seed, shots, labelled split) for W&B summaries too.
            gains, mismatched = [], 0
            base_seeds = {b.get("seed") for b in base}
            for r in rs:
                g = transfer_gain(r, base)
                if g is not None:
                    gains.append(g)
                elif r.get("seed") in base_seeds:
                    mismatched += 1
            if mismatched:
                notes.append(f"{exp}/{strategy}/shots={shots}: {mismatched} run(s) not paired with {base_strategy}: "
                             "same seed but a different split_hash (different labelled examples)")
            g = paired_gain(gains, [0.0] * len(gains), conf)
            row.update(pairs=g.n, gain_mean=g.mean, gain_ci=g.half, gain_low=g.low, gain_high=g.high,
                       gain_p=g.p, negative_transfer=g.negative, split_mismatch=mismatched)
            # A gain over a baseline that was still improving measures the budget, not the transfer. Runs
            # selected without target labels (domain adaptation) never settle by design: their gain is claimed
            # when it holds at every final evaluation (lit_transfer.claims) instead.
            base_up, base_unknown = _unconverged(base)
            own_up, own_unknown = _unconverged(rs)
            why = []
            if _label_free(rs) or _label_free(base):
                stable = _stable_gain(rs, base, conf)
                row["claim_rule"], row["stable_gain"] = STABLE_RULE, stable.as_dict()
                why = [] if stable.claimed else [stable.reason]
            elif base_up or base_unknown:
                why.append(f"{base_strategy} had not converged ({base_up} of {len(base)} runs still improving at the end"
                           f"{f', {base_unknown} unchecked' if base_unknown else ''})")
            if (own_up or own_unknown) and "claim_rule" not in row:
                why.append(f"{strategy} had not converged ({own_up} of {len(rs)} runs still improving"
                           f"{f', {own_unknown} unchecked' if own_unknown else ''})")
            row["gain_claimed"] = not why
            stable = row.get("stable_gain")
            if why:
                row["negative_transfer"] = False
                notes.append(f"{exp}/{strategy}/shots={shots}: no gain or negative transfer is claimed because "
                             + " and ".join(why) + (f" (rule: {STABLE_RULE}, for runs selected without target "
                                                    "labels)" if stable else "; give every strategy a longer budget"))
            elif stable:
                notes.append(f"{exp}/{strategy}/shots={shots}: claimable by the rule for runs selected without target "
                             f"labels ({STABLE_RULE}, in place of the convergence check): the paired gain in target val "
                             f"accuracy has its {round(100 * conf)}% interval "
                             f"{'below' if stable['max_high'] < 0 else 'above'} 0 at each of the final "
                             f"{stable['points']} evaluations of {stable['n']} seeds; its test gain is significant only "
                             "if its Holm-corrected p is below α")
        both = [ba for ba in (_source_before_after(r, stage_source) for r in rs) if ba is not None]
        if both:
            row["source_before"] = mean_ci([b for b, _ in both], conf)[0]
            row["source_after"] = mean_ci([a for _, a in both], conf)[0]
            row["forgetting"], row["forgetting_ci"] = mean_ci([b - a for b, a in both], conf)
        # Own time (training, testing) apart from the time spent training or waiting for the source stage.
        waits = [float(r.get("stage_wait_s") or 0.0) for r in rs]
        walls = [float(r["wall_time_s"]) - w for r, w in zip(rs, waits) if isinstance(r.get("wall_time_s"), (int, float))]
        row["wall_time_s"] = sum(walls) / len(walls) if walls else None
        row["stage_wait_s"] = sum(waits) / len(waits) if any(waits) else None
        row["_stages"] = {s for s in (_loaded_stage(r, stage_source) for r in rs) if s}
        speeds = [float(r["train_images_per_s"]) for r in rs if isinstance(r.get("train_images_per_s"), (int, float))]
        row["train_images_per_s"] = sum(speeds) / len(speeds) if speeds else None
        labels = [r["labels"] for r in rs if isinstance(r.get("labels"), dict)]
        for part in ("target_train", "target_val", "total"):
            vals = [lb[part] for lb in labels if isinstance(lb.get(part), (int, float))]
            row[f"labels_{part}"] = sum(vals) / len(vals) if vals else None
        row["still_improving"], row["convergence_unchecked"] = _unconverged(rs)
        lrs = sorted({r["lr"] for r in rs if isinstance(r.get("lr"), (int, float))})
        row["lr_chosen"] = ", ".join(f"{lr:g}×{sum(r.get('lr') == lr for r in rs)}" for lr in lrs) or None
        row["tuned_over"] = max((int(r.get("tuned_over", 1)) for r in rs), default=1)
        curve = mean_curve(rs)
        if curve:
            curves.append({"experiment": exp, "strategy": strategy, "target_shots": shots, "_row": row, **curve})
        trainable = [(r.get("params") or {}).get("trainable") for r in rs]
        trainable = [t for t in trainable if isinstance(t, (int, float))]
        row["trainable_params"] = int(round(sum(trainable) / len(trainable))) if trainable else None
        rows.append(row)
    notes += _correct_for_multiplicity(rows, conf)
    _label_rows(rows)
    used_by: dict[str, list[str]] = defaultdict(list)  # stage run dir name -> labels of the rows that loaded it
    for row in rows:
        for name in row.pop("_stages"):
            if row["label"] not in used_by[name]:
                used_by[name].append(row["label"])
    for c in curves:
        c["strategy"] = c.pop("_row")["label"]
    rows = [{k: _nan_to_none(v) for k, v in row.items()} for row in rows]

    # One row per source network (experiment, backbone, input size), naming the comparison rows that loaded its
    # checkpoints: a row's "source acc before" is the mean over exactly the stages its runs loaded.
    stage_rows = []
    by_net: dict[tuple, list[dict]] = defaultdict(list)
    for s in stages:
        by_net[(str(s.get("experiment")), str(s.get("backbone") or ""), input_size(s))].append(s)
    for (exp, backbone, size), ss in sorted(by_net.items(), key=lambda kv: tuple(map(str, kv[0]))):
        src = [v for v in (_acc(s, "source/test_acc") for s in ss) if v is not None]
        tgt = [v for v in (_acc(s) for s in ss) if v is not None]
        m, h = mean_ci(src, conf)
        tm, th = mean_ci(tgt, conf)
        names = [Path(str(s.get("run_dir"))).name for s in ss]
        users = list(dict.fromkeys(label for name in names for label in used_by.get(name, [])))
        stage_rows.append({k: _nan_to_none(v) for k, v in {
            "experiment": exp, "backbone": backbone, "input_size": size, "n": len(ss),
            "seeds": sorted({s.get("seed") for s in ss}, key=str),
            "source_acc_mean": m, "source_acc_ci": h,
            "target_acc_mean": tm, "target_acc_ci": th, "used_by": users,
            # the file each stage was tested with: the one --model.weights=source loads (one number per model)
            "checkpoint": ", ".join(sorted({Path(str(x["checkpoint"])).name for x in ss if x.get("checkpoint")}))
            or None}.items()})
    return {"baseline": baseline, "conf": conf, "rows": rows, "stages": stage_rows, "notes": notes, "curves": curves}


# ----------------------------------------------------------------------------------------------- rendering
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
        shots = sorted({r["target_shots"] for r in gains}, key=_shots_key)
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
        shots = sorted({c["target_shots"] for c in curves}, key=_shots_key)
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


def html_report(summary: dict, images: Iterable[Path], source: str) -> str:
    header, body = table(summary)
    esc = html.escape
    rows_html = "".join(
        "<tr%s>%s</tr>" % (' class="neg"' if r.get("negative_transfer") else "",
                           "".join(f"<td>{esc(c.replace('**', ''))}</td>" for c in cells))
        for r, cells in zip(summary["rows"], body))
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>lit_transfer report</title><style>",
        "body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;font-size:14px}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:nth-child(-n+2),th{text-align:left}"
        "tr.neg{background:#fde2e2}img{max-width:100%;margin:1em 0}",
        "</style></head><body>",
        f"<h1>Transfer report</h1><p>{esc(source)} — gains are paired on (seed, target_shots, split_hash); "
        "negative transfer means the whole confidence interval of the gain lies below zero.</p>",
        "<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>" + rows_html + "</table>",
    ]
    if summary["stages"]:
        parts.append("<h2>Source stages</h2><p>The rows under \"used by\" loaded exactly these checkpoints.</p>"
                     "<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in STAGE_HEADER) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>" for cells in stage_table(summary)]
        parts.append("</table>")
    if summary["notes"]:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{esc(n)}</li>" for n in summary["notes"]) + "</ul>")
    for img in images:
        data = base64.b64encode(Path(img).read_bytes()).decode()
        parts.append(f"<h2>{esc(Path(img).stem)}</h2><img alt='{esc(Path(img).stem)}' "
                     f"src='data:image/png;base64,{data}'>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_report(summary: dict, out: Path, source: str) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    images = plots(summary, out)
    files = {"md": out / "report.md", "html": out / "report.html", "csv": out / "summary.csv",
             "json": out / "summary.json"}
    atomic.write_text(files["md"], f"# Transfer report\n\n{source}\n\n" + markdown(summary)
                       + "".join(f"\n![{p.stem}]({p.name})\n" for p in images))
    atomic.write_text(files["html"], html_report(summary, images, source))
    atomic.write_text(files["json"], json.dumps(summary, indent=2, default=str) + "\n")
    keys = list(dict.fromkeys(k for r in summary["rows"] for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(summary["rows"])
    atomic.write_text(files["csv"], buf.getvalue())
    return files


def log_to_wandb(summary: dict, out: Path) -> list[Path]:
    """One W&B run per experiment with the comparison table: online when logged in, else offline under
    ``out/wandb`` (``wandb sync`` uploads it later); nothing with ``WANDB_MODE=disabled``. Returns the offline
    run directories it wrote."""
    from lit_transfer.tracking import resolve_wandb_mode

    mode = resolve_wandb_mode()
    if mode == "disabled" or not summary["rows"]:
        return []
    try:
        import wandb

        header, body = table(summary)
        offline = []
        for exp in dict.fromkeys(r["experiment"] for r in summary["rows"]):
            run = wandb.init(project=os.environ.get("WANDB_PROJECT", "lit_transfer"), group=exp,
                             job_type="report", name=f"report-{exp}", dir=str(out), mode=mode,
                             reinit="finish_previous")
            rows = [cells for r, cells in zip(summary["rows"], body) if r["experiment"] == exp]
            run.log({"transfer_summary": wandb.Table(columns=header, data=rows)})
            if mode == "offline":
                offline.append(Path(run.dir).parent)
            run.finish()
        if offline:
            print(f"W&B: report logged offline in {out / 'wandb'}; upload with "
                  f"`wandb sync {out / 'wandb'}/offline-run-*`", file=sys.stderr)
        return offline
    except Exception as e:  # the local report is the product; W&B is a mirror
        print(f"{PROG}: warning: W&B logging failed: {e}", file=sys.stderr)
        return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description="Compare transfer strategies from result.json files.")
    parser.add_argument("dir", help="directory searched recursively for result.json")
    parser.add_argument("--out", help="report directory (default: DIR/report)")
    parser.add_argument("--baseline", default="scratch",
                        help="strategy the gains are measured against, paired with its runs of the same backbone "
                             "and input size; STRATEGY@BACKBONE pairs every row with that backbone's runs "
                             "(e.g. scratch@small_cnn)")
    parser.add_argument("--conf", type=float, default=0.95, help="confidence level of the intervals")
    parser.add_argument("--wandb", action="store_true",
                        help="also log the table to W&B (online when logged in, else an offline run under the "
                             "report directory); without it, only when logged in and WANDB_MODE allows online")
    parser.add_argument("--rank", help="rank.json of `lit-transfer rank` to check against the fine-tuning results "
                        "(default: DIR/rank.json when present)")
    args = parser.parse_args(argv)
    try:
        root = Path(args.dir)
        if not root.is_dir():
            raise ReportError(f"not a directory: {root}")
        if not 0 < args.conf < 1:
            raise ReportError(f"--conf must be between 0 and 1, got {args.conf}")
        results, notes = collect(root)
        if not results:
            raise ReportError(f"no result.json under {root}; run `lit-transfer sweep` or `lit-transfer fit` first")
        base_strategy, base_backbone = parse_baseline(args.baseline)
        summary = summarise(results, args.baseline, args.conf)
        summary["notes"] = notes + summary["notes"]
        if not any(r["strategy"] == base_strategy and base_backbone in (None, r["backbone"])
                   for r in summary["rows"]):
            summary["notes"].append(f"no {args.baseline} runs: gains over the baseline cannot be computed")
        files = write_report(summary, Path(args.out) if args.out else root / "report", f"Results under {root}")
    except ReportError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    print(markdown(summary))
    rank_file = Path(args.rank) if args.rank else root / "rank.json"
    if args.rank or rank_file.is_file():  # predicted transferability vs measured accuracy (lit_transfer.ranking)
        from lit_transfer.ranking.compare import report_section

        print(report_section(rank_file, results, files["html"].parent, files))
    from lit_transfer.tracking import wandb_online

    if args.wandb or wandb_online():  # a report is local; a W&B run only when asked or logged in
        log_to_wandb(summary, files["html"].parent)
    print(f"HTML report: {files['html']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
