"""``result.json``: one file per run that reports, sweeps and humans read. Written atomically."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Mapping

import torch

from lit_transfer import atomic

__all__ = ["Result", "TARGET_TEST_ACC", "is_ok", "accuracy", "read_result", "scalar_metrics", "config_hash",
           "build_result", "write_result", "code_version", "upgrade", "SCHEMA"]

SCHEMA = 1
TARGET_TEST_ACC = "target/test_acc"  # the headline metric: target test accuracy of the selected checkpoint
OK = "ok"
# Parts of the config that say where a run lives (or where its inputs are found), not what it computes. The
# strategy's name or path is here too: what it sets is in the resolved config itself (and run.strategy).
VOLATILE_KEYS = ("run.dir", "run.root", "run.stage_cache", "run.configs", "strategy", "trainer.default_root_dir",
                 "checkpoint.dirpath", "trainer.logger", "ckpt_path")
# Keys that never change what a fit computes (what to predict, how much the console says, where and whether
# fixed embeddings are cached: same numbers either way): left out of the hash altogether, so adding them kept
# every existing config's hash. protocol: what it sets is in the resolved config. feature_cache.dtype is hashed
# (float16 rounds the features).
UNHASHED_KEYS = ("data.predict_dir", "verbose", "protocol", "feature_cache.enabled", "feature_cache.cache_dir",
                 "feature_cache.memory_mb")


def scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        if isinstance(value, torch.Tensor):
            if value.numel() != 1:
                continue
            value = value.item()
        if isinstance(value, (int, float)):
            out[key] = float(value)
    return out


def config_hash(parser, cfg) -> str:
    """sha256 of the resolved config without the paths that differ between otherwise identical runs."""
    cfg = cfg.clone()
    for key in VOLATILE_KEYS:
        if key in cfg:
            cfg[key] = None
    for key in UNHASHED_KEYS:
        if key in cfg:
            del cfg[key]
    text = parser.dump(cfg, skip_none=False, skip_validation=True)
    return hashlib.sha256(text.encode()).hexdigest()


def code_version(root: Path | None = None) -> dict:
    """The lit_transfer code a result came from: its version and, when the package runs from its own git
    checkout, the commit and whether ``lit_transfer/`` had uncommitted changes (the configs are in the result)."""
    import subprocess

    import lit_transfer

    root = Path(root or Path(lit_transfer.__file__).resolve().parent.parent).resolve()
    out: dict = {"lit_transfer": lit_transfer.__version__, "git_commit": None, "git_dirty": None}

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None  # no git, or it hung: the version alone is recorded
        return done.stdout.strip() if done.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    # an installed wheel inside some other repository (a user's project) must not record that repo's commit
    if top and Path(top).resolve() == root:
        out["git_commit"] = git("rev-parse", "HEAD")
        status = git("status", "--porcelain", "--untracked-files=no", "--", "lit_transfer")
        out["git_dirty"] = None if status is None else bool(status)
    return out


def environment() -> dict:
    """What a result's numbers depend on besides the config: thread count, library versions, the processor and
    the lit_transfer code (:func:`code_version`)."""
    import platform

    import lightning
    import timm

    device = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            device = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), device)
    except OSError:
        pass
    if torch.cuda.is_available():
        device += " | " + ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    return {"threads": torch.get_num_threads(), "torch": torch.__version__, "lightning": lightning.__version__,
            "timm": timm.__version__, "python": platform.python_version(), "device": device, **code_version()}


def compared(model, datamodule, weights_from_stage: bool = False) -> dict:
    """What a row compares besides its strategy: where the backbone's weights came from (``random``, ``hub``,
    ``package:<pip name>``, ``file`` or ``source stage``) and the input size ``[C, H, W]`` it trained on."""
    origin = "source stage" if weights_from_stage else model.backbone.origin
    images = datamodule.subset(datamodule.primary, "train")[0] if hasattr(datamodule, "subset") else None
    size = list(images.shape[1:]) if images is not None and images.ndim == 4 else None
    return {"weights_origin": origin, "input_size": size}


def build_result(*, cfg, config_hash: str, split_hash: str, metrics: dict, params: dict, wall_time_s: float,
                 run_dir: Path, checkpoint, steps: int | None = None, labels: dict | None = None,
                 extra: dict | None = None) -> dict:
    """The result record. ``labels``: labelled target examples the run used (``target_train``, ``target_val``
    for selection, ``total``); ``extra``: e.g. the validation ``curve`` and its ``convergence``."""
    data = cfg.data
    return {
        "schema": SCHEMA,
        "status": "ok",
        "experiment": cfg.run.experiment,
        "strategy": cfg.run.strategy,
        "seed": cfg.seed_everything,
        "target_shots": data.target_shots,
        "train_on": data.train_on,
        "unlabeled_target": bool(data.get("unlabeled_target", False)),
        # how the checkpoint was selected; "oracle" = on target val labels (not a fair DA number)
        "selection": cfg.model.get("selection", "auto"),
        "backbone": cfg.model.backbone,
        "weights": cfg.model.weights,
        "lr": cfg.model.lr,
        "metrics": dict(sorted(metrics.items())),
        "params": params,
        "wall_time_s": round(wall_time_s, 3),
        "epochs": cfg.trainer.max_epochs,
        "steps": steps,
        "labels": labels,
        "val_shots": data.get("val_shots"),
        "shots_seed": data.get("shots_seed"),
        "config_hash": config_hash,
        "split_hash": split_hash,
        "run_dir": str(run_dir),
        "checkpoint": str(checkpoint) if checkpoint else None,
        "env": environment(),
        **(extra or {}),
    }


def write_result(run_dir: Path, result: dict) -> Path:
    return atomic.write_json(Path(run_dir) / "result.json", result)


def upgrade(result: dict) -> dict:
    """A ``result.json`` read back as the current code writes it (in place; also returned).

    Results written before the label-free selection score had its own name (``model.selection: entropy|snd|dev``)
    stored it as ``val_acc``/``val_acc_best`` and its curve as ``curve.val_acc``, as if it were an accuracy;
    they are read as ``target/val_score``/``target/val_score_best`` (under those selections ``val_acc`` was never
    an accuracy: no domain's val accuracy was logged under that name)."""
    from lit_transfer.evaluation import SCORE, UNSUPERVISED_SELECTIONS

    if not isinstance(result, dict) or result.get("selection") not in UNSUPERVISED_SELECTIONS:
        return result
    metrics = result.get("metrics")
    if isinstance(metrics, dict) and SCORE not in metrics and f"{SCORE}_best" not in metrics:
        for old, new in (("val_acc", SCORE), ("val_acc_best", f"{SCORE}_best")):
            if old in metrics:
                metrics[new] = metrics.pop(old)
        result["metrics"] = dict(sorted(metrics.items()))
    curve = result.get("curve")
    if isinstance(curve, dict) and "val_acc" in curve and SCORE not in curve:
        result["curve"] = {(SCORE if k == "val_acc" else k): v for k, v in curve.items()}
    convergence = result.get("convergence")
    if isinstance(convergence, dict) and convergence.get("metric") == "val_acc":
        convergence["metric"] = SCORE
    return result


def is_ok(result) -> bool:
    """The one rule for a usable result: a mapping whose ``status`` is ``ok`` (files written before ``status``
    existed have none and were all ok). Anything else (``diverged``, ``failed``, not a mapping) is never averaged."""
    return isinstance(result, Mapping) and result.get("status", OK) == OK


def accuracy(result, key: str = TARGET_TEST_ACC) -> float | None:
    """A metric of an ok result as a finite float; ``None`` when it is missing, not a number or not finite (a
    failed run has no metric, whatever its file says)."""
    import math

    if not is_ok(result):
        return None
    metrics = result.get("metrics")
    value = metrics.get(key) if isinstance(metrics, Mapping) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


class Result(dict):
    """A ``result.json`` record: a plain dict (what is written and what W&B and the report read), with the rules
    every reader shares: :attr:`ok`, :meth:`metric`, :meth:`read` (old files upgraded) and :meth:`write`."""

    @property
    def status(self) -> str:
        return str(self.get("status", OK))

    @property
    def ok(self) -> bool:
        return is_ok(self)

    @property
    def error(self) -> str | None:
        return None if self.ok else str(self.get("error") or "no reason recorded")

    def metric(self, key: str = TARGET_TEST_ACC) -> float | None:
        return accuracy(self, key)

    @property
    def target_test_acc(self) -> float | None:
        return accuracy(self, TARGET_TEST_ACC)

    @classmethod
    def read(cls, path) -> "Result | None":
        """The result in ``path`` (a ``result.json`` or a run dir holding one), upgraded to the current schema;
        ``None`` when it is missing, unreadable or not a JSON object."""
        import json

        path = Path(path)
        if path.is_dir():
            path = path / "result.json"
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return cls(upgrade(data)) if isinstance(data, dict) else None

    def write(self, run_dir) -> Path:
        return write_result(Path(run_dir), dict(self))


def read_result(path) -> Result | None:
    """:meth:`Result.read`."""
    return Result.read(path)
