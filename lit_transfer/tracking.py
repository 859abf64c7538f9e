"""W&B for the CLI: offline unless the user is logged in, run identity, nested config, transfer summary.

The CLI calls :func:`configure_loggers` before instantiating (loggers
into the run dir; a WandbLogger for runs started by ``wandb agent``), :func:`push_config_to_loggers` before
fit and :func:`push_result_to_loggers` after it.

Nothing here prompts for a login or writes the API key anywhere: a missing login means offline runs that
`wandb sync` can upload later.
"""

from __future__ import annotations

import netrc
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping
from urllib.parse import urlsplit

from lit_transfer.plan.command_line import _SAVE_DIR_LOGGERS
from lit_transfer import gain
from lit_transfer.errors import TransferConfigError

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
    """group = experiment, job_type = strategy, tags and a readable name, from a resolved config: the strategy is
    ``run.strategy`` (the name its config sets), never ``--strategy``'s value (which may be a file's path)."""
    experiment = _get(config, "run.experiment", default="experiment")
    strategy = _get(config, "run.strategy", default="custom")
    shots = _get(config, "data.target_shots", default="all")
    seed = _get(config, "seed_everything", default=None)
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


def transfer_gain(result: Mapping, baseline: Mapping | str | os.PathLike | Iterable[Mapping] | None) -> float | None:
    """``lit_transfer.gain.transfer_gain`` (the report's pairing); ``baseline`` may also be a result.json path."""
    if isinstance(baseline, (str, os.PathLike)):
        baseline = gain.load_result(baseline)
    return gain.transfer_gain(result, baseline)


def push_summary(logger, result: Mapping,
                 baseline: Mapping | str | os.PathLike | Iterable[Mapping] | None = None) -> dict:
    """Summary metrics of a finished run; ``baseline``: scratch result(s) (dicts or a result.json path), optional."""
    metrics = result.get("metrics") or {}
    summary = {k: v for k, v in metrics.items() if k.endswith("test_acc") or k.startswith("source/test_acc")}
    gain_ = transfer_gain(result, baseline)
    if gain_ is not None:
        summary["transfer_gain"] = gain_
    for key in ("wall_time_s",):
        if key in result:
            summary[key] = result[key]
    if "params" in result:
        summary["params/trainable"] = (result["params"] or {}).get("trainable")
    logger.experiment.summary.update(summary)
    return summary



# ------------------------------------------------------------------ W&B sweep agents
# What a sweep agent's run is judged by: the best value over the run, not the last epoch's. Shipped sweeps
# optimise target/val_acc; the other validation metrics get the same treatment so any of them can be a sweep's.
BEST_OF = {"target/val_acc": "max", "source/val_acc": "max", "val_acc": "max", "target/val_score": "max",
           "val_loss": "min", "target/val_loss": "min", "source/val_loss": "min"}


def under_sweep_agent(env: Mapping[str, str] | None = None) -> bool:
    """Whether this process is a run started by ``wandb agent`` (it sets the sweep and the run id)."""
    env = os.environ if env is None else env
    return bool(env.get("WANDB_SWEEP_ID") and env.get("WANDB_RUN_ID"))


def agent_parameters(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The parameters the sweep engine chose for this run, by their sweep names (``model.lr``, ``strategy``):
    read from the file ``wandb agent`` writes for its run (``$WANDB_SWEEP_PARAM_PATH``); ``{}`` elsewhere."""
    import yaml

    env = os.environ if env is None else env
    path = env.get("WANDB_SWEEP_PARAM_PATH")
    if not path:
        return {}
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}
    return {k: (v["value"] if isinstance(v, Mapping) and "value" in v else v)
            for k, v in data.items() if k != "wandb_version"}




def _entry_dict(entry) -> dict | None:
    """A logger entry of the parsed config as ``{"class_path", "init_args"}``; ``None`` for an instance."""
    if hasattr(entry, "as_dict"):
        entry = entry.as_dict()
    if isinstance(entry, str):
        return {"class_path": entry, "init_args": {}}
    if isinstance(entry, Mapping) and "class_path" in entry:
        return {"class_path": str(entry["class_path"]), "init_args": dict(entry.get("init_args") or {})}
    return None


def _class_name(entry: Mapping) -> str:
    return entry["class_path"].rsplit(".", 1)[-1]


def _require_tensorboard() -> None:
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None and importlib.util.find_spec("tensorboardX") is None:
        raise TransferConfigError("trainer.logger=TensorBoardLogger needs TensorBoard: "
                                  "pip install 'lit-transfer[tensorboard]'")


def configure_loggers(cfg, run_dir: Path, env: Mapping[str, str] | None = None) -> None:
    """The run's ``trainer.logger`` config, pointed at its run directory.

    No logger given: a CSVLogger. Loggers that write files write them into the run directory, whatever
    ``save_dir`` said. Under ``wandb agent`` a WandbLogger joining the agent's run is added when the config has
    none (``trainer.logger=false`` still means no logging at all).
    """
    env = os.environ if env is None else env
    logger = cfg.trainer.logger
    if logger is False:
        return
    if logger is None or logger is True:
        entries: list = [{"class_path": "lightning.pytorch.loggers.CSVLogger",
                          "init_args": {"save_dir": str(run_dir), "name": "logs", "version": ""}}]
    else:
        entries = list(logger) if isinstance(logger, (list, tuple)) else [logger]
    out = []
    for raw in entries:
        entry = _entry_dict(raw)
        if entry is None:  # an already-built logger object: used as given
            out.append(raw)
            continue
        name, init = _class_name(entry), entry["init_args"]
        if name == "TensorBoardLogger":
            _require_tensorboard()
        if name == "WandbLogger":
            configure_wandb_init(init, cfg, run_dir, env)
        elif name in _SAVE_DIR_LOGGERS or "save_dir" in init:
            init["save_dir"] = str(run_dir)
            if name == "CSVLogger" and init.get("name", "lightning_logs") == "lightning_logs" \
                    and init.get("version") is None:
                init.update(name="logs", version="")  # the same files as the default logger
        out.append(entry)
    if _runs_for_the_agent(cfg, env) and not any(
            isinstance(e, Mapping) and _class_name(e) == "WandbLogger" for e in out):
        wandb_init: dict = {}
        configure_wandb_init(wandb_init, cfg, run_dir, env)
        out.append({"class_path": "lightning.pytorch.loggers.WandbLogger", "init_args": wandb_init})
    cfg.trainer.logger = out[0] if len(out) == 1 else out


def _runs_for_the_agent(cfg, env: Mapping[str, str]) -> bool:
    """Under ``wandb agent``, this process is the agent's run, not a source stage that a trial trains first
    (the stage's process inherits the agent's environment; joining the trial's W&B run would clobber it)."""
    if not under_sweep_agent(env):
        return False
    strategy = _get(_plain(cfg), "run.strategy", default=None)
    return strategy != "source" or agent_parameters(env).get("strategy") == "source"


def configure_wandb_init(init_args, cfg, run_dir: Path, env: Mapping[str, str] | None = None) -> None:
    """Fill a WandbLogger's init args: offline when not logged in, group/job_type/tags from the run; under
    ``wandb agent`` the agent's run id and project (a run elsewhere would not count for the sweep)."""
    env = os.environ if env is None else env
    get = init_args.get if hasattr(init_args, "get") else lambda k, d=None: getattr(init_args, k, d)
    mode = resolve_wandb_mode(env)
    info = wandb_run_info(_plain(cfg))
    init_args["save_dir"] = str(run_dir)
    if get("offline") is None or mode == "offline":
        init_args["offline"] = mode == "offline"
    for key in ("group", "job_type", "tags", "name"):
        if not get(key) and key in info:
            init_args[key] = info[key]
    if _runs_for_the_agent(cfg, env):
        init_args["id"] = env["WANDB_RUN_ID"]
        if env.get("WANDB_PROJECT") and not get("project"):
            init_args["project"] = env["WANDB_PROJECT"]
    if not get("project"):
        init_args["project"] = env.get("WANDB_PROJECT") or "lit_transfer"


def _wandb_loggers(trainer: Trainer) -> list:
    from lightning.pytorch.loggers import WandbLogger

    return [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]


def define_best_metrics(logger) -> None:
    """Summaries keep each validation metric's best value (what a sweep compares runs by), not its last."""
    for name, best in BEST_OF.items():
        logger.experiment.define_metric(name, summary=best, step_metric="trainer/global_step")


def push_config_to_loggers(trainer: Trainer, parser, cfg) -> None:
    """``wandb.config``: the full resolved CLI config, nested (LightningCLI alone never sends it), plus under
    ``wandb agent`` the sweep's parameters under their flat sweep names (what the sweep engine reads back)."""
    loggers = _wandb_loggers(trainer)
    if not loggers or not trainer.is_global_zero:
        return
    flat = agent_parameters()
    # A sweep parameter that is also a top-level config key (seed_everything) is the agent's: W&B locks the
    # keys it set from the sweep and warns on every update of them.
    config = {k: v for k, v in _plain(cfg).items() if k not in flat}
    for logger in loggers:
        push_config(logger, config)
        present = set(logger.experiment.config.keys())
        missing = {k: v for k, v in flat.items() if k not in present}
        if missing:
            logger.experiment.config.update(missing, allow_val_change=True)
        define_best_metrics(logger)


def push_result_to_loggers(trainer: Trainer, result: dict) -> None:
    loggers = _wandb_loggers(trainer)
    if not loggers:
        return
    baselines = scratch_baselines(result)
    for logger in loggers:
        push_summary(logger, result, baseline=baselines)
        # One CLI call is one W&B run: finish it so the summary is flushed (also when called in-process).
        logger.experiment.finish()


def scratch_baselines(result: Mapping, baseline: str = "scratch") -> list[dict]:
    """Finished scratch runs under the same runs root that may pair with ``result`` (a sweep's other trials or
    the CLI's ``<root>/<experiment>/scratch/*``); :func:`lit_transfer.gain.transfer_gain` pairs them."""
    if result.get("strategy") == baseline or not result.get("run_dir"):
        return []
    return gain.find_baselines(result["run_dir"], baseline)
