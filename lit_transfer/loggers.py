"""Glue between the CLI and experiment trackers (W&B): run identity, the full config, summary metrics."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch import Trainer

__all__ = ["configure_wandb_init", "push_config_to_loggers", "push_result_to_loggers"]


def configure_wandb_init(init_args, cfg, run_dir: Path) -> None:
    """Fill a WandbLogger's init args: offline when not logged in, group/job_type/tags from the run."""
    from lit_transfer import tracking

    get = init_args.get if hasattr(init_args, "get") else lambda k, d=None: getattr(init_args, k, d)
    mode = tracking.resolve_wandb_mode()
    info = tracking.wandb_run_info(_plain(cfg))
    init_args["save_dir"] = str(run_dir)
    if get("offline") is None or mode == "offline":
        init_args["offline"] = mode == "offline"
    for key in ("group", "job_type", "tags", "name"):
        if not get(key) and key in info:
            init_args[key] = info[key]
    if not get("project"):
        init_args["project"] = "lit_transfer"


def _plain(cfg) -> dict:
    return cfg.as_dict() if hasattr(cfg, "as_dict") else dict(cfg)


def _wandb_loggers(trainer: Trainer) -> list:
    from lightning.pytorch.loggers import WandbLogger

    return [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]


def push_config_to_loggers(trainer: Trainer, parser, cfg) -> None:
    """The full resolved CLI config, nested, in ``wandb.config`` (LightningCLI alone never sends it)."""
    loggers = _wandb_loggers(trainer)
    if not loggers or not trainer.is_global_zero:
        return
    from lit_transfer import tracking

    config = _plain(cfg)
    for logger in loggers:
        tracking.push_config(logger, config)


def push_result_to_loggers(trainer: Trainer, result: dict) -> None:
    loggers = _wandb_loggers(trainer)
    if not loggers:
        return
    from lit_transfer import tracking

    baseline = _scratch_sibling(result)
    for logger in loggers:
        tracking.push_summary(logger, result, baseline=baseline)
        # One CLI call is one W&B run: finish it so the summary is flushed (also when called in-process).
        logger.experiment.finish()


def _scratch_sibling(result: dict):
    """The scratch run beside this one (a sweep's other trials) with the same seed, shots and split, if any."""
    if result.get("strategy") == "scratch":
        return None
    for path in Path(result["run_dir"]).parent.glob("*/result.json"):
        other = _read(path)
        if other and other.get("strategy") == "scratch" and all(
            other.get(k) == result.get(k) for k in ("seed", "target_shots", "split_hash")
        ):
            return other
    return None


def _read(path: Path):
    import json

    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
