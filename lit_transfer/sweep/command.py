"""A trial's command line: the sweep's ``command`` with W&B's macros expanded exactly as ``wandb agent`` expands
them, so both runners launch identical commands; our CLI also gets its stage cache and run dir."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Iterator

from lit_transfer.plan.command_line import has_option

DEFAULT_COMMAND = ["${env}", "${interpreter}", "${program}", "${args}"]  # W&B's default
ARG_MACROS = ("args", "args_no_hyphens", "args_no_boolean_flags", "args_no_equals", "args_json",
              "args_json_file", "args_append_hydra", "args_override_hydra")
MACROS = ("env", "interpreter", "program") + ARG_MACROS
ENVVAR_RE = re.compile(r"\$\{envvar:([A-Za-z0-9_]*)\}")
_MACRO_RE = re.compile(r"\$\{(.*)\}")


def _arg_macros(params: dict, json_file: Path) -> dict[str, list[str]]:
    # Same rendering as W&B's agent (str(value)), so both runners launch identical commands.
    # wandb's agent gets a run's parameters sorted by name (W&B's engine sorts them): so do we.
    out: dict[str, list[str]] = {k: [] for k in ARG_MACROS}
    params = {k: params[k] for k in sorted(params)}
    for k, v in params.items():
        flag = f"{k}={v}"
        out["args"].append("--" + flag)
        out["args_no_hyphens"].append(flag)
        out["args_no_equals"] += [f"--{k}", str(v)]
        out["args_append_hydra"].append("+" + flag)
        out["args_override_hydra"].append("++" + flag)
        if isinstance(v, bool):
            if v:
                out["args_no_boolean_flags"].append("--" + k)
        else:
            out["args_no_boolean_flags"].append("--" + flag)
    out["args_json"] = [json.dumps(params)]
    out["args_json_file"] = [str(json_file)]
    return out


def calls_lit_transfer(tokens: list[str]) -> bool:
    """Whether a command runs our CLI (then it gets `--run.dir`); other programs get $LIT_TRANSFER_RUN_DIR only."""
    for t in tokens:
        base = os.path.basename(t)
        if t == "lit_transfer" or t.startswith("lit_transfer.") or base in ("lit-transfer", "lit_transfer"):
            return True
        if base.endswith(".py") and ("lit_transfer" in base or "lit_transfer" in Path(t).parts[:-1]):
            return True
    return False


def _expanded(cfg: dict, params: dict, trial_dir: Path) -> Iterator[tuple[list[str], bool]]:
    """Each token of the sweep's command expanded, and whether it came from the parameters (``${args}`` ...)."""
    macros: dict[str, list[str]] = {"env": ["/usr/bin/env"], "interpreter": [sys.executable],
                                    "program": [str(cfg.get("program", ""))]}
    macros.update(_arg_macros(params, trial_dir / "args.json"))
    for token in cfg.get("command", DEFAULT_COMMAND):
        token = ENVVAR_RE.sub(lambda m: os.environ.get(m.group(1), m.group(1)), str(token))
        m = _MACRO_RE.fullmatch(token)
        yield (macros[m.group(1)] if m else [token]), bool(m and m.group(1) in ARG_MACROS)


def runs_our_cli(cfg: dict) -> bool:
    """Whether the sweep's trials run our CLI: then success means a ``result.json``, and the run dir is an
    argument (``--run.dir``) instead of ``$LIT_TRANSFER_RUN_DIR``."""
    return calls_lit_transfer([t for tokens, from_params in _expanded(cfg, {}, Path()) if not from_params
                               for t in tokens])


def build_command(cfg: dict, params: dict, trial_dir: Path, stage_cache: Path | None = None) -> list[str]:
    """A trial's command line: the sweep's ``command`` with W&B's macros expanded as ``wandb agent`` does; our
    CLI also gets ``--run.stage_cache`` (unless the command sets its own) and, last, ``--run.dir``."""
    cmd: list[str] = []
    fixed: list[str] = []  # the command without parameter values: what decides whether it is our CLI
    for tokens, from_params in _expanded(cfg, params, trial_dir):
        cmd += tokens
        if not from_params:
            fixed += tokens
    if calls_lit_transfer(fixed):
        if stage_cache is not None and not has_option(fixed, "--run.stage_cache"):
            cmd.append(f"--run.stage_cache={stage_cache}")
        cmd += ["--run.dir", str(trial_dir)]
    return cmd


def stage_cache_of(out: Path) -> Path:
    """Where a sweep's trials share their source stages (content-addressed, so a re-run reuses them)."""
    return (Path(out) / "stages").resolve()
