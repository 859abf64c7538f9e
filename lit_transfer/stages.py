"""Shared stages: ``--model.weights=source`` trains the experiment's source model once and reuses it.

The source stage of a target run is the same command with the strategy swapped for ``source`` and the
target-only settings dropped. It is content-addressed by its resolved config, so every trial of a sweep
that needs it (any strategy, shots or seed) loads one checkpoint, and concurrent trials wait on a file lock
instead of training it twice.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

from lit_transfer.errors import TransferConfigError

__all__ = ["resolve_source_stage", "source_stage_args", "STAGE_CACHE_ENV"]

STAGE_CACHE_ENV = "LIT_TRANSFER_STAGE_CACHE"
# Overrides that define what the source model is; everything else (strategy, lr, shots, ...) is the target's.
_KEEP = ("--data.", "--model.backbone", "--model.in_chans", "--trainer.")
_DROP = ("--data.target_shots", "--data.train_on", "--data.init_args.target_shots", "--trainer.callbacks",
         "--trainer.logger", "--trainer.default_root_dir")


def _is_strategy_config(path: str) -> bool:
    return Path(path).parent.name == "strategy"


def source_stage_args(argv: list[str], source_seed: int) -> list[str]:
    """The ``fit`` arguments of the source stage, derived from a target run's arguments."""
    configs, overrides, i = [], [], 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("--config", "-c") and i + 1 < len(argv):
            if not _is_strategy_config(argv[i + 1]):
                configs += ["--config", argv[i + 1]]
            i += 2
            continue
        if arg.startswith(_KEEP) and not arg.startswith(_DROP):
            if "=" in arg:
                overrides.append(arg)
            elif i + 1 < len(argv):
                overrides += [arg, argv[i + 1]]
                i += 1
        i += 1
    from lit_transfer.cli import configs_root

    source = str(configs_root() / "strategy" / "source.yaml")
    return ["fit", *configs, "--config", source, *overrides, f"--seed_everything={source_seed}"]


def _stage_key(cli, args: list[str]) -> str:
    cfg = cli.parser.parse_args(args, defaults=True)
    from lit_transfer.results import config_hash

    return config_hash(cli._subcommand_parsers["fit"], cfg["fit"])[:16]


def resolve_source_stage(cli, cfg) -> Path:
    """Path of the source stage's last checkpoint, training it first when no finished one exists."""
    argv = list(cli._argv)
    if argv and argv[0] == "fit":
        argv = argv[1:]
    args = source_stage_args(argv, cfg.run.source_seed)
    key = _stage_key(cli, args)
    cache = Path(os.environ.get(STAGE_CACHE_ENV, "~/.cache/lit_transfer/stages")).expanduser()
    stage_dir = cache / f"{cfg.run.experiment}-source-{key}"
    ckpt = stage_dir / "checkpoints" / "last.ckpt"
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent trials wait here for the one that trains it
        if (stage_dir / "result.json").exists() and ckpt.exists():
            print(f"[lit_transfer] reusing source stage {stage_dir}", file=sys.stderr)
            return ckpt
        if stage_dir.exists():  # an interrupted earlier attempt: start it over
            import shutil

            shutil.rmtree(stage_dir)
        print(f"[lit_transfer] training source stage once: {stage_dir}", file=sys.stderr)
        env = {k: v for k, v in os.environ.items() if k not in ("LIT_TRANSFER_RUN_DIR", "LOCAL_RANK")}
        log_path = cache / f"{cfg.run.experiment}-source-{key}.log"
        with open(log_path, "w") as log:
            proc = subprocess.run(
                [sys.executable, "-m", "lit_transfer", *args, f"--run.dir={stage_dir}"],
                stdout=log, stderr=subprocess.STDOUT, env=env,
            )
        if proc.returncode != 0 or not ckpt.exists():
            raise TransferConfigError(f"the source stage failed (exit {proc.returncode}); see {log_path}")
        return ckpt
