"""W&B for the CLI: offline unless the user is logged in, run identity, nested config, transfer summary.

Nothing here prompts for a login or writes the API key anywhere: a missing login means offline runs that
`wandb sync` can upload later.
"""

from __future__ import annotations

import json
import netrc
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from lightning.pytorch import Trainer

_notified = False


def wandb_logged_in(env: Mapping[str, str] | None = None) -> bool:
    """An API key in the environment or a netrc entry for the W&B host (what `wandb login` writes)."""
    env = os.environ if env is None else env
    if env.get("WANDB_API_KEY"):
        return True
    host = urlsplit(env.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname
    path = Path(env["NETRC"]).expanduser() if env.get("NETRC") else Path.home() / ".netrc"
    try:
        return netrc.netrc(str(path)).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def resolve_wandb_mode(env: Mapping[str, str] | None = None) -> str:
    """WANDB_MODE when set; otherwise "online" if logged in, else "offline" (with a one-time notice)."""
    global _notified
    env = os.environ if env is None else env
    if env.get("WANDB_MODE"):
        return env["WANDB_MODE"]
    if str(env.get("WANDB_DISABLED", "")).lower() in ("1", "true", "yes"):
        return "disabled"
    if wandb_logged_in(env):
        return "online"
    if not _notified:
        _notified = True
        print("W&B: not logged in, logging offline; upload later with `wandb login` then "
              "`wandb sync <run dir>/wandb/offline-run-*`", file=sys.stderr)
    return "offline"


def wandb_online(env: Mapping[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    mode = env.get("WANDB_MODE", "online" if wandb_logged_in(env) else "offline")
    return mode in ("online", "run") and wandb_logged_in(env)


def _get(config: Mapping, *paths: str, default: Any = None) -> Any:
    """First dotted path present in `config`; `init_args` levels (jsonargparse class_path form) are skipped."""
    for path in paths:
        node: Any = config
        for key in path.split("."):
            if isinstance(node, Mapping) and key not in node and isinstance(node.get("init_args"), Mapping):
                node = node["init_args"]
            if not isinstance(node, Mapping) or key not in node:
                break
            node = node[key]
        else:
            if node is not None:
                return node
    return default


def wandb_run_info(config: Mapping) -> dict:
    """group = experiment, job_type = strategy, tags and a readable name; from a resolved config or a result."""
    experiment = _get(config, "experiment", "run.experiment", "data.experiment", "data.name", default="experiment")
    strategy = _get(config, "strategy", "run.strategy", "strategy.name", "model.strategy", default="custom")
    if isinstance(strategy, Mapping):  # a strategy given as a class_path block
        strategy = str(strategy.get("class_path", "custom")).rsplit(".", 1)[-1]
    shots = _get(config, "target_shots", "data.target_shots", default="all")
    seed = _get(config, "seed", "seed_everything", default=None)
    return {"group": str(experiment), "job_type": str(strategy),
            "tags": [str(strategy), f"shots={shots}", f"seed={seed}"],
            "name": f"{strategy}-shots{shots}-seed{seed}"}


def _plain(obj: Any) -> Any:
    """JSON-able nested dicts: jsonargparse Namespaces, Paths and classes become dicts/strings."""
    if hasattr(obj, "as_dict") and callable(obj.as_dict):
        obj = obj.as_dict()
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)


def push_config(logger, config: Mapping) -> None:
    """The full resolved config into wandb.config, nested (one key per top-level section, no flat copies)."""
    logger.experiment.config.update(_plain(config), allow_val_change=True)


def _load(result: Mapping | str | os.PathLike | None) -> dict | None:
    if result is None or isinstance(result, Mapping):
        return dict(result) if result is not None else None
    try:
        return json.loads(Path(result).read_text())
    except (OSError, ValueError):
        return None


def transfer_gain(result: Mapping, baseline: Mapping | str | os.PathLike | None) -> float | None:
    """target/test_acc minus the baseline's, only when both ran on the same seed, shots and labelled split."""
    base = _load(baseline)
    if not base:
        return None
    if any(result.get(k) != base.get(k) for k in ("seed", "target_shots", "split_hash")):
        return None
    a = (result.get("metrics") or {}).get("target/test_acc")
    b = (base.get("metrics") or {}).get("target/test_acc")
    return None if a is None or b is None else float(a) - float(b)


def push_summary(logger, result: Mapping, baseline: Mapping | str | os.PathLike | None = None) -> dict:
    """Summary metrics of a finished run; `baseline` is the scratch result (dict or result.json path), optional."""
    metrics = result.get("metrics") or {}
    summary = {k: v for k, v in metrics.items() if k.endswith("test_acc") or k.startswith("source/test_acc")}
    gain = transfer_gain(result, baseline)
    if gain is not None:
        summary["transfer_gain"] = gain
    for key in ("wall_time_s",):
        if key in result:
            summary[key] = result[key]
    if "params" in result:
        summary["params/trainable"] = (result["params"] or {}).get("trainable")
    logger.experiment.summary.update(summary)
    return summary


# ------------------------------------------------------------------ the CLI's hooks
def configure_loggers(cfg, run_dir: Path) -> None:
    """The run's ``trainer.logger`` config, pointed at its run directory (a CSVLogger when none is given)."""
    logger = cfg.trainer.logger
    if logger is None or logger is True:
        cfg.trainer.logger = {
            "class_path": "lightning.pytorch.loggers.CSVLogger",
            "init_args": {"save_dir": str(run_dir), "name": "logs", "version": ""},
        }
        return
    for entry in logger if isinstance(logger, list) else [logger]:
        if isinstance(entry, dict) or hasattr(entry, "class_path"):
            init = entry["init_args"] if isinstance(entry, dict) else entry.init_args
            if "WandbLogger" in str(entry["class_path"] if isinstance(entry, dict) else entry.class_path):
                configure_wandb_init(init, cfg, run_dir)
            elif hasattr(init, "save_dir") or (isinstance(init, dict) and "save_dir" in init):
                init["save_dir"] = str(run_dir)


def configure_wandb_init(init_args, cfg, run_dir: Path) -> None:
    """Fill a WandbLogger's init args: offline when not logged in, group/job_type/tags from the run."""
    get = init_args.get if hasattr(init_args, "get") else lambda k, d=None: getattr(init_args, k, d)
    mode = resolve_wandb_mode()
    info = wandb_run_info(_plain(cfg))
    init_args["save_dir"] = str(run_dir)
    if get("offline") is None or mode == "offline":
        init_args["offline"] = mode == "offline"
    for key in ("group", "job_type", "tags", "name"):
        if not get(key) and key in info:
            init_args[key] = info[key]
    if not get("project"):
        init_args["project"] = "lit_transfer"


def _wandb_loggers(trainer: Trainer) -> list:
    from lightning.pytorch.loggers import WandbLogger

    return [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]


def push_config_to_loggers(trainer: Trainer, parser, cfg) -> None:
    """The full resolved CLI config, nested, in ``wandb.config`` (LightningCLI alone never sends it)."""
    loggers = _wandb_loggers(trainer)
    if not loggers or not trainer.is_global_zero:
        return
    config = _plain(cfg)
    for logger in loggers:
        push_config(logger, config)


def push_result_to_loggers(trainer: Trainer, result: dict) -> None:
    loggers = _wandb_loggers(trainer)
    if not loggers:
        return
    baseline = _scratch_sibling(result)
    for logger in loggers:
        push_summary(logger, result, baseline=baseline)
        # One CLI call is one W&B run: finish it so the summary is flushed (also when called in-process).
        logger.experiment.finish()


def _scratch_sibling(result: dict):
    """The scratch run beside this one (a sweep's other trials) with the same seed, shots and split, if any."""
    if result.get("strategy") == "scratch":
        return None
    for path in Path(result["run_dir"]).parent.glob("*/result.json"):
        other = _load(path)
        if other and other.get("strategy") == "scratch" and transfer_gain(result, other) is not None:
            return other
    return None

