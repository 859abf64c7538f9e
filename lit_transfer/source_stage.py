"""The source stage: ``--model.weights=source`` trains the experiment's source model once and reuses it.

The source stage of a target run is the same command with the strategy swapped for ``source`` and the
target-only settings dropped: strategy and protocol configs (the target's budget and tuning; a ``protocol:``
named in a data config too: ``--protocol=null``), and every
``--trainer.*`` override except the few that change what is computed (precision, accelerator, devices,
determinism). Its data is the target run's *parsed* ``data`` section (YAML and command line alike), with the
target-only settings (target shots, validation labels, shots seed, the unlabeled stream) set to neutral values:
a ``--data.target_shots`` on the command line can never make the stage fail on a rare target class, and every
shots setting shares one stage. It is content-addressed by its resolved config, so every trial of a sweep
that needs it (any strategy, shots, seed or budget) loads one checkpoint, and concurrent trials wait on a file
lock instead of training it twice. Target runs load the checkpoint the stage itself was tested with (its
``result.json``), so the stage's reported accuracy and every run's "before" are the same model.

Everything a stage needs comes in explicitly: the target run's :class:`CommandLine`, the ``fit`` parser that hashes
configs, and the parsed config (``run.stage_cache``: where stages live; ``run.configs``: where
``strategy/source.yaml`` is). This module sits below the CLI and never imports it.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

from lit_transfer import configs
from lit_transfer.errors import TransferConfigError
from lit_transfer.plan.command_line import CommandLine, Override
from lit_transfer.plan.run import source_seed

__all__ = ["resolve_source_stage", "source_seed", "source_stage_args", "stage_data_args", "stage_key", "stage_checkpoint"]
# Overrides that define what the source model is; everything else (strategy, lr, budget, shots, ...) is the
# target's. A target run's --trainer.max_steps must not give the sweep a different source model than the demo.
_KEEP = ("data.", "model.backbone", "model.in_chans", "trainer.precision", "trainer.accelerator", "trainer.devices",
         "trainer.num_nodes", "trainer.deterministic", "trainer.strategy")
_DROP = tuple(f"data.{k}" for k in ("target_shots", "val_shots", "shots_seed", "train_on", "unlabeled_target"))
# The stage's values of the target-only data settings, whatever the target run says; train_on comes from
# strategy/source.yaml; predict_dir never defines a model.
NEUTRAL_DATA = {"target_shots": None, "val_shots": None, "shots_seed": None, "unlabeled_target": False}
_NOT_STAGE_DATA = ("train_on", "predict_dir")


def stage_data_args(data: dict) -> list[str]:
    """``--data.KEY=<json>`` for every setting of the target run's parsed ``data`` section that defines the
    source stage's data; target-only settings get their neutral values (``NEUTRAL_DATA``)."""
    import json

    out = []
    for key, value in data.items():
        if key in _NOT_STAGE_DATA:
            continue
        value = NEUTRAL_DATA.get(key, value)
        out.append(f"--data.{key}={json.dumps(value, sort_keys=True)}")
    return out


def _defines_the_source(override: Override, data_given: bool) -> bool:
    key = override.key + "."
    if data_given and key.startswith("data."):
        return False  # the stage's data comes from the parsed config
    return any(key.startswith(k if k.endswith(".") else k + ".") for k in _KEEP) and \
        not any(key.startswith(k + ".") for k in _DROP)


def source_stage_args(command: CommandLine, source_seed: int, threads: int | None = None,
                      configs_dir: str | None = None, data: dict | None = None) -> list[str]:
    """The ``fit`` arguments of the source stage, derived from a target run's :class:`CommandLine`: its
    experiment configs (never its strategy or protocol configs), ``strategy/source.yaml``, the stage's data and
    the overrides that define the source model (backbone, input channels, precision, devices, determinism).

    ``data``: the target run's parsed ``data`` section (a plain dict): the stage's data settings come from it,
    not from the command line's ``--data.*`` flags or a re-read of the YAML files.

    ``--strategy=<source.yaml>`` comes last, so a ``strategy:`` key in one of the target's configs never turns
    the stage into a target run. ``configs_dir``: the target's
    ``run.configs`` (where ``strategy/source.yaml`` is; default: the shipped configs)."""
    config_args = [arg for c in command.configs if not c.target_only for arg in ("--config", c.path)]
    overrides = [t for o in command.overrides if _defines_the_source(o, data is not None) for t in o.tokens]
    source = str(configs.strategy_config("source", configs_dir))
    # The thread count changes floating-point reductions: the same source model needs the same count.
    threads_arg = [] if threads is None else [f"--run.threads={threads}"]
    # source.yaml also right after the target's configs: it wins over them (model.weights: null even when a
    # model config names pretrained weights), as the stage always did; explicit source-defining flags win over it.
    data_args = [] if data is None else stage_data_args(data)
    return ["fit", *config_args, "--config", source, *data_args, *overrides, f"--seed_everything={source_seed}",
            *threads_arg, "--protocol=null", f"--strategy={source}"]


def stage_key(fit_parser, args: list[str]) -> str:
    """Content address of a source stage: the hash of its resolved ``fit`` config (``args`` without ``fit``)."""
    from lit_transfer.results import config_hash

    return config_hash(fit_parser, fit_parser.parse_args(args, defaults=True))[:16]


def resolve_source_stage(command: CommandLine, fit_parser, cfg) -> Path:
    """Path of the source stage's checkpoint, training it first when no finished one exists.

    ``command``: the target run's command line; ``fit_parser``: the CLI's ``fit`` parser;
    ``cfg``: the target's parsed config (``run.source_seed``, ``run.threads``, ``run.configs``,
    ``run.stage_cache``, ``run.experiment``)."""
    if cfg.data.get("source") == "none":
        raise TransferConfigError("model.weights=source trains a source stage, but data.source is 'none' (no "
                                  "source domain); name a source domain, or use model.weights=pretrained")
    data = cfg.data.as_dict() if hasattr(cfg.data, "as_dict") else dict(cfg.data)
    args = source_stage_args(command, source_seed(cfg), cfg.run.threads, cfg.run.get("configs"), data=data)
    key = stage_key(fit_parser, args[1:])
    cache = Path(cfg.run.get("stage_cache") or "~/.cache/lit_transfer/stages").expanduser()
    stage_dir = cache / f"{cfg.run.experiment}-source-{key}"
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent trials wait here for the one that trains it
        ckpt = stage_checkpoint(stage_dir)
        if ckpt is not None:
            print(f"[lit_transfer] reusing source stage {stage_dir}", file=sys.stderr)
            return ckpt
        if stage_dir.exists():  # an interrupted earlier attempt: start it over
            import shutil

            shutil.rmtree(stage_dir)
        print(f"[lit_transfer] training source stage once: {stage_dir}", file=sys.stderr)
        # Not a DDP rank of the target run, and not part of a `wandb agent` trial's W&B run: its own process.
        own = ("LIT_TRANSFER_RUN_DIR", "LOCAL_RANK", "WANDB_RUN_ID", "WANDB_SWEEP_ID", "WANDB_SWEEP_PARAM_PATH")
        env = {k: v for k, v in os.environ.items() if k not in own}
        log_path = cache / f"{cfg.run.experiment}-source-{key}.log"
        with open(log_path, "w") as log:
            proc = subprocess.run(
                [sys.executable, "-m", "lit_transfer", *args, f"--run.dir={stage_dir}"],
                stdout=log, stderr=subprocess.STDOUT, env=env,
            )
        ckpt = stage_checkpoint(stage_dir)
        if proc.returncode != 0 or ckpt is None:
            raise TransferConfigError(f"the source stage failed (exit {proc.returncode}); see {log_path}")
        return ckpt


def stage_checkpoint(stage_dir: Path) -> Path | None:
    """The checkpoint a finished stage reported its test accuracy with (``result.json``), if it exists."""
    from lit_transfer.results import Result

    result = Result.read(stage_dir)
    ckpt = result.get("checkpoint") if result is not None and result.ok else None
    return Path(ckpt) if ckpt and Path(ckpt).is_file() else None
