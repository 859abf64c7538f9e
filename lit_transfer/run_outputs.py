"""What a run writes besides checkpoints and logs: its clock (``fit_time_s``, ``fit_cpu_s``, ``data_time_s``), notes
on its data, predictions (``predictions.csv`` / ``predictions.pt``) and the metrics it prints."""

from __future__ import annotations

import time
from pathlib import Path

from lit_transfer import results

__all__ = ["fit_clock", "data_notes", "save_predictions", "print_metrics"]


def fit_clock(cli) -> dict:
    """``fit_time_s`` (wall) and ``fit_cpu_s`` (this process's CPU time) since ``fit`` started, its test after fit
    included, without building the data (``data_time_s``): a sweep trial's wall time minus ``fit_time_s`` is its
    fixed cost (imports, parsers, data, stage lookup)."""
    clock = getattr(cli, "fit_started", None)
    if clock is None:
        return {}
    wall, cpu, before = clock
    after = getattr(cli.datamodule, "load_time", None)
    data = (0.0, 0.0) if after is None or after == before else after  # built during this fit
    return {"fit_time_s": round(time.perf_counter() - wall - data[0], 3),
            "fit_cpu_s": round(time.process_time() - cpu - data[1], 3),
            "data_time_s": round(after[0], 3) if after is not None else None}


def data_notes(dm) -> dict:
    """What result.json says about the data beyond the splits: unreadable files skipped, classes matched by
    name, image files converted to the domain's channels."""
    notes: dict = {}
    skipping = [role for role, spec in dm.specs.items() if getattr(spec, "skip_corrupt", False)]
    if skipping:  # unreadable image files left out of this run's data
        notes["skipped_corrupt"] = {role: len(dm.skipped_files.get(role, [])) for role in skipping}
    if getattr(dm, "class_names", None) is not None:  # matched by name; a domain missing some says so
        notes["classes"] = {"names": list(dm.class_names), "missing": dm.missing_classes}
    if getattr(dm, "converted", None):  # image files of the other mode, converted to the domain's channels
        notes["converted_mode"] = {role: dm.converted.get(role, 0) for role in dm.specs}
    return notes


def save_predictions(run_dir: Path, out: list, dm) -> Path:
    """What ``predict`` returned: class probabilities and predictions of ``data.predict_dir``'s images as
    ``predictions.csv`` (file, predicted class name, one probability per class), or of the target test split
    as ``predictions.pt``."""
    import torch

    batches = out[0] if isinstance(out[0], list) else out
    merged = {k: torch.cat([b[k] for b in batches]) for k in batches[0]}
    files = getattr(dm, "predict_files", None)
    if files:
        import csv
        import io

        from lit_transfer import atomic

        names = dm.class_names or [str(i) for i in range(merged["probs"].shape[1])]
        text = io.StringIO()
        writer = csv.writer(text)
        writer.writerow(["file", "predicted", *(f"p_{n}" for n in names)])
        for file, pred, probs in zip(files, merged["pred"].tolist(), merged["probs"].tolist()):
            writer.writerow([file, names[pred], *(f"{p:.6g}" for p in probs)])
        path = run_dir / "predictions.csv"
        atomic.write_text(path, text.getvalue())
    else:
        path = run_dir / "predictions.pt"
        torch.save(merged, path)
    print(f"predictions: {path}")
    return path


def print_metrics(what: str, outputs: list[dict]) -> None:
    """Each metric once (domains are in the names: ``target/test_acc``), on stdout."""
    merged: dict = {}
    for d in outputs or []:
        merged.update(results.scalar_metrics(d))
    if not merged:
        return
    width = max(len(k) for k in merged)
    print(f"{what} metrics:")
    for key in sorted(merged):
        print(f"  {key:<{width}}  {merged[key]:.6g}")
