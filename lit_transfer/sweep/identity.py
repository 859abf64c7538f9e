"""What a trial computes: its command without where it runs, plus the content of every ``--config`` file it
names. A re-run whose command differs from the one a trial in ``<out>`` ran refuses with one line."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shlex
from pathlib import Path

from lit_transfer.plan.command_line import CONFIG_FLAGS, options, without_options
from lit_transfer.sweep.command import build_command, stage_cache_of
from lit_transfer.sweep.errors import SweepError
from lit_transfer.sweep.spec import constant_values

_PYTHON_RE = re.compile(r"python[0-9.]*(\.exe)?")
_WHERE_IT_RUNS = ("--run.dir", "--run.stage_cache")


def command_identity(cmd: list[str]) -> list[str]:
    """What a trial's command computes: its tokens without where it runs (the interpreter's path, the run dir,
    the stage cache), so a moved sweep directory or another virtual environment is the same trial."""
    return ["${interpreter}" if _PYTHON_RE.fullmatch(os.path.basename(token)) else token
            for token in without_options([str(t) for t in cmd], _WHERE_IT_RUNS)]


def command_inputs(cmd: list[str]) -> dict[str, str]:
    """sha256 (16 hex digits) of every ``--config`` file a command names: a changed config is a changed trial."""
    from lit_transfer.configs import resolve

    out = {}
    for _, key, value in options([str(t) for t in cmd]):
        if key not in CONFIG_FLAGS or value is None:
            continue
        path = Path(resolve(value)).expanduser()
        with contextlib.suppress(OSError):
            out[value] = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return out


def command_change(recorded: dict, cmd: list[str]) -> str | None:
    """How ``cmd`` differs from the command a trial recorded in its ``trial.json`` (``None``: the same)."""
    if "command" not in recorded:
        return None
    old, new = command_identity(recorded["command"]), command_identity(cmd)
    if old != new:
        gone = [t for t in old if t not in new] or ["(nothing)"]
        added = [t for t in new if t not in old] or ["(nothing)"]
        return f"it ran {shlex.join(gone[:3])} where the command now has {shlex.join(added[:3])}"
    now = command_inputs(cmd)
    changed = [k for k, v in (recorded.get("inputs") or {}).items() if now.get(k) not in (None, v)]
    if changed:
        return f"config file {changed[0]} changed since it ran"
    return None


def check_same_command(cfg: dict, out: Path, recorded: dict[str, dict]) -> None:
    """Refuse (one line) to resume ``out`` when a trial there ran a different command than this sweep file now
    gives it: its results would be reported as if they came from the new command. ``recorded``: trial id ->
    its ``trial.json``, for every trial in ``out``."""
    constants = constant_values(cfg)
    for tid, info in recorded.items():
        if "command" not in info or "params" not in info:
            continue
        params = {**info["params"], **constants}  # what this trial would run now: today's constants
        change = command_change(info, build_command(cfg, params, out / "trials" / tid, stage_cache_of(out)))
        if change:
            raise SweepError(f"{out} holds trials of a different command (trial {tid}: {change}); results of two "
                             f"commands are never mixed: give --out <new dir> to run this sweep apart (the old "
                             f"results stay in {out}), or restore the command they ran")
