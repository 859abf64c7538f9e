"""The report's aggregation: results in, the comparison rows, source-stage rows, mean curves and notes out.

Rows are per (experiment, strategy, shots, selection, backbone, weights' origin, input size); each carries the
target accuracy with a t-interval over seeds, the paired gain over the baseline (:mod:`.gains`), forgetting on
the source, wall time, throughput, labels used and trainable parameters. Nothing here draws or writes."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

from lit_transfer.report.gains import add_gain, correct_for_multiplicity, unconverged
from lit_transfer.report.inputs import (SOURCE_STAGE, input_size, model_key, parse_baseline, selection_label,
                                        shots_key)
from lit_transfer.report.tuning import select_tuned
from lit_transfer.results import TARGET_TEST_ACC, accuracy
from lit_transfer.stats import mean_ci

__all__ = ["summarise", "mean_curve"]

SOURCE_TEST_ACC = "source/test_acc"


def _nan_to_none(x: Any) -> Any:
    return None if isinstance(x, float) and math.isnan(x) else x


def _loaded_stage(r: dict, stage_names: Iterable[str]) -> str | None:
    """The run dir name of the source stage whose checkpoint run ``r`` loaded, if it is among ``stage_names``."""
    if not isinstance(r.get("weights"), str):
        return None
    parts = Path(r["weights"]).parts
    return next((name for name in stage_names if name in parts), None)


def _source_before_after(r: dict, stage_source: dict[str, float | None]) -> tuple[float, float] | None:
    """Source accuracy before/after target training: explicit metrics, else the loaded stage's and this run's."""
    before, after = accuracy(r, "source/test_acc_before"), accuracy(r, "source/test_acc_after")
    if before is None:
        stage = _loaded_stage(r, stage_source)
        before = stage_source.get(stage) if stage else None
    if after is None and before is not None:
        after = accuracy(r, SOURCE_TEST_ACC)
    return (before, after) if before is not None and after is not None else None


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


def _group(results: list[dict], notes: list[str]) -> dict[tuple, list[dict]]:
    """The runs of each row (source stages apart); runs without a target accuracy are left out with a note."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in results:
        if r.get("strategy") == SOURCE_STAGE:
            continue
        if accuracy(r) is None:
            notes.append(f"no {TARGET_TEST_ACC} in {r.get('_path', '?')}: left out")
            continue
        groups[(str(r.get("experiment")), str(r.get("strategy")), r.get("target_shots"), selection_label(r),
                *model_key(r))].append(r)
    return groups


def _baseline_of(key: tuple, groups: dict[tuple, list[dict]], base_strategy: str,
                 base_backbone: str | None) -> list[dict] | None:
    """The baseline's runs of the compared network (same backbone, or the named one, and the same input size),
    selected the same way if it was run so, else its only (or first) selection."""
    exp, _, shots, selection, backbone, _, size = key
    want = base_backbone or backbone
    base_keys = sorted((k for k in groups if k[:3] == (exp, base_strategy, shots) and k[4] == want
                        and k[6] == size), key=lambda k: (k[3] != selection, str(k[3]), k[5]))
    return groups.get(base_keys[0]) if base_keys else None


def _add_source(row: dict, rs: list[dict], stage_source: dict[str, float | None], conf: float) -> None:
    """Source accuracy before and after target training, and the forgetting between them."""
    both = [ba for ba in (_source_before_after(r, stage_source) for r in rs) if ba is not None]
    if both:
        row["source_before"] = mean_ci([b for b, _ in both], conf)[0]
        row["source_after"] = mean_ci([a for _, a in both], conf)[0]
        row["forgetting"], row["forgetting_ci"] = mean_ci([b - a for b, a in both], conf)


def _add_costs(row: dict, rs: list[dict], stage_source: dict[str, float | None]) -> None:
    """Own time (training, testing) apart from the time spent training or waiting for the source stage; the
    stages loaded, throughput and the labelled examples used."""
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


def _add_training(row: dict, rs: list[dict]) -> None:
    """Convergence counts and the learning rates tuning chose."""
    row["still_improving"], row["convergence_unchecked"] = unconverged(rs)
    lrs = sorted({r["lr"] for r in rs if isinstance(r.get("lr"), (int, float))})
    row["lr_chosen"] = ", ".join(f"{lr:g}×{sum(r.get('lr') == lr for r in rs)}" for lr in lrs) or None
    row["tuned_over"] = max((int(r.get("tuned_over", 1)) for r in rs), default=1)


def _trainable(rs: list[dict]) -> int | None:
    trainable = [(r.get("params") or {}).get("trainable") for r in rs]
    trainable = [t for t in trainable if isinstance(t, (int, float))]
    return int(round(sum(trainable) / len(trainable))) if trainable else None


def _stage_rows(stages: list[dict], used_by: dict[str, list[str]], conf: float) -> list[dict]:
    """One row per source network (experiment, backbone, input size), naming the comparison rows that loaded its
    checkpoints: a row's "source acc before" is the mean over exactly the stages its runs loaded."""
    stage_rows = []
    by_net: dict[tuple, list[dict]] = defaultdict(list)
    for s in stages:
        by_net[(str(s.get("experiment")), str(s.get("backbone") or ""), input_size(s))].append(s)
    for (exp, backbone, size), ss in sorted(by_net.items(), key=lambda kv: tuple(map(str, kv[0]))):
        src = [v for v in (accuracy(s, SOURCE_TEST_ACC) for s in ss) if v is not None]
        tgt = [v for v in (accuracy(s) for s in ss) if v is not None]
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
    return stage_rows


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
    stage_source = {Path(str(s.get("run_dir"))).name: accuracy(s, SOURCE_TEST_ACC) for s in stages
                    if s.get("run_dir")}
    groups = _group(results, notes)
    notes += _code_notes(groups)
    base_strategy, base_backbone = parse_baseline(baseline)
    rows, curves = [], []
    # one network's rows together (scratch of the compared network, then the named baseline's, ...), by shots
    for key in sorted(groups, key=lambda k: (k[0], k[1] != base_strategy, k[1], k[4] != (base_backbone or k[4]),
                                             k[4], k[5], str(k[6]), shots_key(k[2]), str(k[3]))):
        exp, strategy, shots, selection, backbone, origin, size = key
        rs = groups[key]
        seeds = [r.get("seed") for r in rs]
        if len(set(seeds)) < len(seeds):
            notes.append(f"{exp}/{strategy}/shots={shots}: several runs share a seed (e.g. an LR sweep); "
                         "they are pooled")
        acc_mean, acc_half = mean_ci([accuracy(r) for r in rs], conf)
        row: dict[str, Any] = {"experiment": exp, "strategy": strategy, "target_shots": shots, "n": len(rs),
                               "acc_mean": acc_mean, "acc_ci": acc_half, "selection": selection,
                               "backbone": backbone, "weights_origin": origin, "input_size": size}
        want = base_backbone or backbone
        base = _baseline_of(key, groups, base_strategy, base_backbone)
        is_base = strategy == base_strategy and backbone == want
        if not is_base and not base and any(k[:3] == (exp, base_strategy, shots) for k in groups):
            notes.append(f"{exp}/{strategy}/{backbone}/shots={shots}: no {base_strategy} runs of {want} at "
                         f"{size or 'this input size'}: no gain is computed (runs of other networks never pair)")
        if not is_base and base:
            notes += add_gain(row, rs, base, base_strategy, conf)
        _add_source(row, rs, stage_source, conf)
        _add_costs(row, rs, stage_source)
        _add_training(row, rs)
        curve = mean_curve(rs)
        if curve:
            curves.append({"experiment": exp, "strategy": strategy, "target_shots": shots, "_row": row, **curve})
        row["trainable_params"] = _trainable(rs)
        rows.append(row)
    notes += correct_for_multiplicity(rows, conf)
    _label_rows(rows)
    used_by: dict[str, list[str]] = defaultdict(list)  # stage run dir name -> labels of the rows that loaded it
    for row in rows:
        for name in row.pop("_stages"):
            if row["label"] not in used_by[name]:
                used_by[name].append(row["label"])
    for c in curves:
        c["strategy"] = c.pop("_row")["label"]
    rows = [{k: _nan_to_none(v) for k, v in row.items()} for row in rows]
    return {"baseline": baseline, "conf": conf, "rows": rows, "stages": _stage_rows(stages, used_by, conf),
            "notes": notes, "curves": curves}
