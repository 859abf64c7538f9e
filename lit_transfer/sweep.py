"""Offline runner for W&B sweep files: `lit-transfer sweep FILE [--out DIR] [--workers N] ...`.

The same YAML runs unmodified under `wandb sweep` + `wandb agent`; this runner needs no server. Each trial is
its own process (forked from this pre-imported runner when it runs our CLI, spawned otherwise) with its
own directory `<out>/trials/<trial_id>/`, so a crash (exception, OOM kill, SIGKILL) costs one trial, never the sweep. Trial ids are derived from the parameter values, so re-running the same
command resumes: trials with a result are skipped, failed ones are retried only with --retry-failed.

A trial is its full resolved command (every token but where it runs: interpreter path, run dir, stage cache)
plus the content of every ``--config`` file it names. A re-run whose command differs from the one a trial in
``<out>`` ran refuses with one line (results of two commands are never mixed in one directory, and
``sweep.yaml`` is never overwritten with a different command): give ``--out`` for the changed sweep.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import itertools
import json
import math
import os
import random
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from lit_transfer import atomic

PROG = "lit-transfer sweep"
METHODS = ("grid", "random", "bayes")
# distribution -> (required keys, defaults), as W&B defines them
DISTRIBUTIONS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "constant": (("value",), {}),
    "categorical": (("values",), {}),
    "categorical_w": (("values", "probabilities"), {}),
    "int_uniform": (("min", "max"), {}),
    "uniform": (("min", "max"), {}),
    "q_uniform": (("min", "max"), {"q": 1.0}),
    "log_uniform": (("min", "max"), {}),
    "log_uniform_values": (("min", "max"), {}),
    "q_log_uniform": (("min", "max"), {"q": 1.0}),
    "q_log_uniform_values": (("min", "max"), {"q": 1.0}),
    "inv_log_uniform": (("min", "max"), {}),
    "inv_log_uniform_values": (("min", "max"), {}),
    "normal": ((), {"mu": 0.0, "sigma": 1.0}),
    "q_normal": ((), {"mu": 0.0, "sigma": 1.0, "q": 1.0}),
    "log_normal": ((), {"mu": 0.0, "sigma": 1.0}),
    "q_log_normal": ((), {"mu": 0.0, "sigma": 1.0, "q": 1.0}),
    "beta": ((), {"a": 1.0, "b": 1.0}),
    "q_beta": ((), {"a": 1.0, "b": 1.0, "q": 1.0}),
}
SPEC_KEYS = {"value", "values", "distribution", "min", "max", "q", "mu", "sigma", "a", "b", "probabilities"}
TOP_KEYS = {"method", "parameters", "program", "command", "metric", "run_cap", "name", "description",
            "project", "entity", "early_terminate", "controller", "job", "image_uri"}
DEFAULT_COMMAND = ["${env}", "${interpreter}", "${program}", "${args}"]  # W&B's default
ARG_MACROS = ("args", "args_no_hyphens", "args_no_boolean_flags", "args_no_equals", "args_json",
              "args_json_file", "args_append_hydra", "args_override_hydra")
MACROS = ("env", "interpreter", "program") + ARG_MACROS
ENVVAR_RE = re.compile(r"\$\{envvar:([A-Za-z0-9_]*)\}")
KILL_GRACE_S = 10.0
POLL_S = 0.02  # how often the runner checks its trials: a finished trial's slot is refilled within this


class SweepError(ValueError):
    """Bad sweep file or arguments; printed as one line."""


# ----------------------------------------------------------------------------------------------- sweep files
def load_sweep(path: str | os.PathLike) -> dict:
    """Read and validate a sweep file; adds `_params`: flat name -> normalised spec (with `distribution`)."""
    path = Path(path)
    try:
        cfg = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise SweepError(f"sweep file not found: {path}") from None
    except yaml.YAMLError as e:
        raise SweepError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(cfg, dict):
        raise SweepError(f"{path}: a sweep file is a mapping with `method` and `parameters`")
    unknown = sorted(set(cfg) - TOP_KEYS)
    if unknown:
        raise SweepError(f"{path}: unknown key {unknown[0]!r} (known: {', '.join(sorted(TOP_KEYS))})")
    method = cfg.get("method")
    if method not in METHODS:
        raise SweepError(f"{path}: unknown method {method!r}: use one of {', '.join(METHODS)}")
    if not isinstance(cfg.get("parameters"), dict) or not cfg["parameters"]:
        raise SweepError(f"{path}: `parameters` must be a non-empty mapping")
    cfg["_params"] = _flatten(cfg["parameters"])
    command = cfg.get("command", DEFAULT_COMMAND)
    if not isinstance(command, list) or not command:
        raise SweepError(f"{path}: `command` must be a non-empty list")
    for token in command:
        m = re.fullmatch(r"\$\{(.*)\}", str(token))
        if m and not m.group(1).startswith("envvar:") and m.group(1) not in MACROS:
            raise SweepError(f"{path}: unknown macro {token} in command (known: "
                             + ", ".join("${%s}" % k for k in MACROS) + ")")
    if any(str(t) == "${program}" for t in command) and not cfg.get("program"):
        raise SweepError(f"{path}: the command uses ${{program}} but the file has no `program`")
    metric = cfg.get("metric") or {}
    if not isinstance(metric, dict):
        raise SweepError(f"{path}: `metric` must be a mapping like {{name: target/val_acc, goal: maximize}}")
    if method == "bayes" and not metric.get("name"):
        raise SweepError(f"{path}: method bayes needs `metric: {{name: ..., goal: maximize|minimize}}`")
    if metric.get("goal", "minimize") not in ("maximize", "minimize"):
        raise SweepError(f"{path}: metric.goal must be maximize or minimize, got {metric['goal']!r}")
    if cfg.get("run_cap") is not None and not (isinstance(cfg["run_cap"], int) and cfg["run_cap"] > 0):
        raise SweepError(f"{path}: run_cap must be a positive integer")
    return cfg


def _flatten(params: dict, prefix: str = "") -> dict[str, dict]:
    """Nested `{data: {parameters: {target_shots: ...}}}` becomes `data.target_shots` (jsonargparse's syntax)."""
    out: dict[str, dict] = {}
    for name, spec in params.items():
        full = f"{prefix}{name}"
        if not isinstance(spec, dict):
            raise SweepError(f"parameter {full}: expected a mapping with value, values or distribution")
        if "parameters" in spec:
            if not isinstance(spec["parameters"], dict) or not spec["parameters"]:
                raise SweepError(f"parameter {full}: `parameters` must be a non-empty mapping")
            out.update(_flatten(spec["parameters"], full + "."))
        else:
            out[full] = _normalise(full, spec)
    return out


def _normalise(name: str, spec: dict) -> dict:
    bad = sorted(set(spec) - SPEC_KEYS)
    if bad:
        raise SweepError(f"parameter {name}: unknown key {bad[0]!r}")
    spec = dict(spec)
    dist = spec.get("distribution")
    if dist is None:  # W&B's inference rules
        if "value" in spec:
            dist = "constant"
        elif "values" in spec:
            dist = "categorical_w" if "probabilities" in spec else "categorical"
        elif "min" in spec and "max" in spec:
            both_int = all(isinstance(spec[k], int) and not isinstance(spec[k], bool) for k in ("min", "max"))
            dist = "int_uniform" if both_int else "uniform"
        else:
            raise SweepError(f"parameter {name}: needs `value`, `values` or `distribution`")
    if dist not in DISTRIBUTIONS:
        raise SweepError(f"parameter {name}: unknown distribution {dist!r} (known: {', '.join(DISTRIBUTIONS)})")
    required, defaults = DISTRIBUTIONS[dist]
    for key in required:
        if key not in spec:
            raise SweepError(f"parameter {name}: distribution {dist} needs `{key}`")
    for key, default in defaults.items():
        spec.setdefault(key, default)
    spec["distribution"] = dist
    if "values" in required and (not isinstance(spec["values"], list) or not spec["values"]):
        raise SweepError(f"parameter {name}: `values` must be a non-empty list")
    if dist == "categorical_w" and len(spec["probabilities"]) != len(spec["values"]):
        raise SweepError(f"parameter {name}: `probabilities` must be as long as `values`")
    if "min" in required:
        lo, hi = spec["min"], spec["max"]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (lo, hi)):
            raise SweepError(f"parameter {name}: `min` and `max` must be numbers")
        if lo >= hi:
            raise SweepError(f"parameter {name}: min {lo} is not less than max {hi}")
        if dist == "int_uniform" and not (isinstance(lo, int) and isinstance(hi, int)):
            raise SweepError(f"parameter {name}: int_uniform needs integer `min` and `max`")
        if dist.endswith("_values") and lo <= 0:
            raise SweepError(f"parameter {name}: {dist} needs min > 0")
    return spec


def _quantise(x: float, q: float) -> float | int:
    v = round(x / q) * q
    return int(v) if isinstance(q, int) else v


def sample(spec: dict, rng: random.Random) -> Any:
    """One draw from a normalised parameter spec, with W&B's meaning of each distribution."""
    d, s = spec["distribution"], spec
    if d == "constant":
        return s["value"]
    if d == "categorical":
        return rng.choice(s["values"])
    if d == "categorical_w":
        return rng.choices(s["values"], weights=s["probabilities"])[0]
    if d == "int_uniform":
        return rng.randint(s["min"], s["max"])
    if d in ("uniform", "q_uniform"):
        x = rng.uniform(s["min"], s["max"])
    elif d in ("log_uniform", "q_log_uniform"):  # bounds are exponents
        x = math.exp(rng.uniform(s["min"], s["max"]))
    elif d in ("log_uniform_values", "q_log_uniform_values"):
        x = math.exp(rng.uniform(math.log(s["min"]), math.log(s["max"])))
    elif d == "inv_log_uniform":
        x = math.exp(-rng.uniform(s["min"], s["max"]))
    elif d == "inv_log_uniform_values":
        x = 1.0 / math.exp(rng.uniform(math.log(1 / s["max"]), math.log(1 / s["min"])))
    elif d in ("normal", "q_normal"):
        x = rng.gauss(s["mu"], s["sigma"])
    elif d in ("log_normal", "q_log_normal"):
        x = math.exp(rng.gauss(s["mu"], s["sigma"]))
    else:  # beta, q_beta
        x = rng.betavariate(s["a"], s["b"])
    return _quantise(x, s["q"]) if d.startswith("q_") else x


def _grid_values(name: str, spec: dict) -> list:
    d = spec["distribution"]
    if d == "constant":
        return [spec["value"]]
    if d in ("categorical", "categorical_w"):
        return list(spec["values"])
    if d == "int_uniform":
        return list(range(spec["min"], spec["max"] + 1))
    if d == "q_uniform":
        n = int(math.floor((spec["max"] - spec["min"]) / spec["q"] + 1e-9))
        return [_quantise(spec["min"] + i * spec["q"], spec["q"]) for i in range(n + 1)]
    raise SweepError(f"parameter {name}: grid search cannot enumerate distribution {d}; "
                     "use `values` or method random")


# ----------------------------------------------------------------------------------------------- trials
def trial_id(params: dict, constants: tuple[str, ...] = ()) -> str:
    """Readable slug of the varying values plus a short hash of all values: stable across re-runs."""
    digest = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:8]
    parts = []
    for key in sorted(params, key=lambda k: (k.rsplit(".", 1)[-1], k)):
        if key in constants:
            continue
        v = params[key]
        text = f"{v:.4g}" if isinstance(v, float) else str(v)
        parts.append(f"{key.rsplit('.', 1)[-1]}={text}")
    slug = re.sub(r"[^A-Za-z0-9.=_+-]", "", "-".join(parts))[:80]
    return f"{slug}-{digest}" if slug else digest


def plan_trials(cfg: dict, run_cap: int | None = None) -> list[dict]:
    """All parameter sets for grid/random (deterministic, so a re-run finds the same trial ids)."""
    params, method = cfg["_params"], cfg["method"]
    cap = run_cap if run_cap is not None else cfg.get("run_cap")
    if method == "grid":
        names = list(params)
        combos = itertools.product(*(_grid_values(n, params[n]) for n in names))
        out = [dict(zip(names, c)) for c in combos]
        return out[:cap] if cap else out
    if method == "random":
        if not cap:
            raise SweepError("method random needs `run_cap` in the sweep file or --run-cap")
        seed = hashlib.sha256(json.dumps(cfg["parameters"], sort_keys=True, default=str).encode()).hexdigest()
        rng = random.Random(int(seed[:16], 16))
        out, seen = [], set()
        for _ in range(cap * 100):  # categorical-only spaces repeat; duplicates would share a trial dir
            p = {n: sample(s, rng) for n, s in params.items()}
            key = json.dumps(p, sort_keys=True, default=str)
            if key not in seen:
                seen.add(key)
                out.append(p)
            if len(out) == cap:
                break
        return out
    raise SweepError(f"plan_trials does not handle method {method}")


def _constants(cfg: dict) -> tuple[str, ...]:
    return tuple(n for n, s in cfg["_params"].items() if s["distribution"] == "constant")


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


def build_command(cfg: dict, params: dict, trial_dir: Path, stage_cache: Path | None = None) -> list[str]:
    """A trial's command line: the sweep's ``command`` with W&B's macros expanded as ``wandb agent`` does; our
    CLI also gets ``--run.stage_cache`` (unless the command sets its own) and, last, ``--run.dir``."""
    macros: dict[str, list[str]] = {"env": ["/usr/bin/env"], "interpreter": [sys.executable],
                                    "program": [str(cfg.get("program", ""))]}
    macros.update(_arg_macros(params, trial_dir / "args.json"))
    cmd: list[str] = []
    fixed: list[str] = []  # the command without parameter values: what decides whether it is our CLI
    for token in cfg.get("command", DEFAULT_COMMAND):
        token = ENVVAR_RE.sub(lambda m: os.environ.get(m.group(1), m.group(1)), str(token))
        m = re.fullmatch(r"\$\{(.*)\}", token)
        expanded = macros[m.group(1)] if m else [token]
        cmd += expanded
        if not (m and m.group(1) in ARG_MACROS):
            fixed += expanded
    if calls_lit_transfer(fixed):
        if stage_cache is not None and not any(t.startswith("--run.stage_cache") for t in fixed):
            cmd.append(f"--run.stage_cache={stage_cache}")
        cmd += ["--run.dir", str(trial_dir)]
    return cmd


_PYTHON_RE = re.compile(r"python[0-9.]*(\.exe)?")


def command_identity(cmd: list[str]) -> list[str]:
    """What a trial's command computes: its tokens without where it runs (the interpreter's path, the run dir,
    the stage cache), so a moved sweep directory or another virtual environment is the same trial."""
    out, i = [], 0
    while i < len(cmd):
        token = str(cmd[i])
        if token == "--run.dir":
            i += 2
            continue
        if not token.startswith(("--run.dir=", "--run.stage_cache=")):
            out.append("${interpreter}" if _PYTHON_RE.fullmatch(os.path.basename(token)) else token)
        i += 1
    return out


def command_inputs(cmd: list[str]) -> dict[str, str]:
    """sha256 (16 hex digits) of every ``--config`` file a command names: a changed config is a changed trial."""
    from lit_transfer.configs import resolve

    out = {}
    for i, token in enumerate(map(str, cmd)):
        if token in ("--config", "-c") and i + 1 < len(cmd):
            value = str(cmd[i + 1])
        elif token.startswith(("--config=", "-c=")):
            value = token.split("=", 1)[1]
        else:
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


def check_same_command(cfg: dict, out: Path, trials: list[tuple[str, dict]]) -> None:
    """Refuse (one line) to resume ``out`` when a trial there ran a different command than this sweep file now
    gives it: its results would be reported as if they came from the new command."""
    constants = {n: s["value"] for n, s in cfg["_params"].items() if s["distribution"] == "constant"}
    for tid, params in trials:
        recorded = _read_json(out / "trials" / tid / "trial.json") or {}
        if "command" not in recorded:
            continue
        params = {**params, **constants}  # what this trial would run now: today's constants
        change = command_change(recorded, build_command(cfg, params, out / "trials" / tid, stage_cache_of(out)))
        if change:
            raise SweepError(f"{out} holds trials of a different command (trial {tid}: {change}); results of two "
                             f"commands are never mixed: give --out <new dir> to run this sweep apart (the old "
                             f"results stay in {out}), or restore the command they ran")


def stage_cache_of(out: Path) -> Path:
    """Where a sweep's trials share their source stages (content-addressed, so a re-run reuses them)."""
    return (Path(out) / "stages").resolve()


# ----------------------------------------------------------------------------------------------- files
def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def trial_state(trial_dir: Path) -> str:
    """'ok' (has an ok result), 'failed' (incl. a result such as "diverged"), or 'pending' (never run,
    interrupted, or left by a killed runner)."""
    if (trial_dir / "result.json").exists():
        result = _read_json(trial_dir / "result.json")
        return "ok" if isinstance(result, dict) and result.get("status", "ok") == "ok" else "failed"
    info = _read_json(trial_dir / "trial.json") or {}
    return info.get("status") if info.get("status") in ("ok", "failed") else "pending"


def _move_aside(trial_dir: Path, attic: Path) -> None:
    # Kept, not deleted: the log of a failed attempt is evidence; the CLI still gets a fresh directory.
    attic.mkdir(parents=True, exist_ok=True)
    for k in itertools.count(1):
        dest = attic / f"{trial_dir.name}.{k}"
        if not dest.exists():
            os.replace(trial_dir, dest)
            return


def failure_reason(trial_dir: Path) -> str | None:
    """Why a trial failed, in one line: its result's ``error`` (e.g. a diverged run), else the CLI's
    ``lit-transfer: error:`` line in its log."""
    result = _read_json(trial_dir / "result.json")
    if isinstance(result, dict) and result.get("status", "ok") != "ok":
        return f"{result.get('status')}: {result.get('error') or 'no reason recorded'}"
    prefix = "lit-transfer: error: "
    lines = [ln for ln in _log_tail(trial_dir / "trial.log", max_lines=200).splitlines() if ln.startswith(prefix)]
    return lines[-1][len(prefix):] if lines else None


def _log_tail(log: Path, max_bytes: int = 4000, max_lines: int = 30) -> str:
    try:
        with open(log, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - max_bytes))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-max_lines:])


# ----------------------------------------------------------------------------------------------- environment
def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


DEFAULT_THREADS = 1


def trial_env(out: Path, threads: int = DEFAULT_THREADS, base: dict | None = None) -> dict[str, str]:
    """The environment of every trial. The intra-op thread count is fixed by ``threads``, never derived from
    the number of workers: it changes floating-point reduction order, so ``--workers 1`` and ``--workers 2``
    would otherwise train different models from one sweep file (the CLI records the count in result.json)."""
    from lit_transfer.tracking import wandb_logged_in

    env = dict(os.environ if base is None else base)
    # A trial's directory is its own: one inherited from the runner's environment would be stale.
    env.pop("LIT_TRANSFER_RUN_DIR", None)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)  # torch sizes its intra-op pool from OMP_NUM_THREADS
    if "WANDB_MODE" not in env and not wandb_logged_in(env):
        env["WANDB_MODE"] = "offline"
    env["PYTHONUNBUFFERED"] = "1"  # the log tail of a killed trial must hold its last lines
    return env


# ----------------------------------------------------------------------------------------------- progress
def _fmt_duration(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class Progress:
    """One status line on stderr: rewritten in place on a TTY, one line per event otherwise (CI logs)."""

    def __init__(self, name: str, total: int, workers: int, stream=None):
        self.name, self.total, self.workers = name, total, workers
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.ok = self.failed = self.running = 0
        self.durations: list[float] = []

    def line(self) -> str:
        remaining = self.total - self.ok - self.failed
        text = (f"[{self.name}] {self.ok}/{self.total} ok, {self.failed} failed, "
                f"{self.running} running, {remaining - self.running} pending")
        if self.durations and remaining:
            mean = sum(self.durations) / len(self.durations)
            text += f", ETA {_fmt_duration(mean * remaining / self.workers)}"
        return text

    def update(self, event: str | None = None) -> None:
        if self.tty:
            if event:
                self.stream.write(f"\r\x1b[K{event}\n")
            self.stream.write(f"\r\x1b[K{self.line()}")
        elif event:
            self.stream.write(f"{event}  {self.line()}\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


# ----------------------------------------------------------------------------------------------- forking
def forkable_args(cmd: list[str], fork: bool = True) -> list[str] | None:
    """The CLI arguments when ``cmd`` is ``[env] <this python> -m lit_transfer ...`` on one device, else None.

    Such trials can be forked from this process instead of spawned: torch, Lightning and timm are imported
    once for the whole sweep instead of once per trial (~6 s each on a small CPU). Multi-device runs are
    spawned, since DDP re-launches its workers from the command line.
    """
    i = 1 if cmd and os.path.basename(cmd[0]) == "env" else 0
    if i < len(cmd) and "=" in cmd[i] and not cmd[i].startswith("-"):
        return None  # VAR=value prefixes: leave them to a real process
    if not fork or not hasattr(os, "fork"):
        return None
    if len(cmd) < i + 3 or os.path.realpath(cmd[i]) != os.path.realpath(sys.executable):
        return None
    if cmd[i + 1 : i + 3] != ["-m", "lit_transfer"]:
        return None
    args = cmd[i + 3 :]
    if any("ddp" in a or a.startswith("--trainer.devices") or a.startswith("--trainer.num_nodes") for a in args):
        return None
    return args


def warm_up(args: list[str]) -> None:
    """Once per runner, before its first fork: import what every trial imports and parse one trial's command
    line (``--print_config``, its output discarded), so each forked trial finds the modules loaded and
    jsonargparse's caches filled instead of paying for them itself. A command line that fails to parse here
    fails in its trial, with the trial's log."""
    import io

    import lit_transfer.cli
    import lit_transfer.gain  # noqa: F401 - imported by every fit's result
    import lit_transfer.tracking  # noqa: F401

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            lit_transfer.cli.main([*args, "--print_config"])
        except (Exception, SystemExit):  # noqa: BLE001 - only a warm-up
            pass


class ForkedTrial:
    """A trial forked from the (pre-imported) runner, with the bits of ``subprocess.Popen`` the runner uses."""

    def __init__(self, args: list[str], log, env: dict[str, str]):
        import gc

        import lit_transfer.cli  # noqa: F401 - imported before forking, so children start warm

        gc.collect()
        gc.freeze()  # children never scan (and so never copy-on-write) the runner's objects; nor collect them
        sys.stdout.flush()
        sys.stderr.flush()
        self.returncode: int | None = None
        self.pid = os.fork()
        if self.pid:
            # Own process group, set from both sides so a killpg right after fork never misses it: the
            # runner stops trials with killpg, and the terminal's Ctrl-C reaches the runner only.
            with contextlib.suppress(OSError):
                os.setpgid(self.pid, self.pid)
        else:  # the child: never returns
            code = 1
            try:
                os.setpgid(0, 0)
                devnull = os.open(os.devnull, os.O_RDONLY)
                os.dup2(devnull, 0)
                os.dup2(log.fileno(), 1)
                os.dup2(log.fileno(), 2)
                # the runner's sys.stdout/stderr may be wrappers (pytest, a TTY progress line): use the log fds
                sys.stdout = open(1, "w", buffering=1, closefd=False)
                sys.stderr = open(2, "w", buffering=1, closefd=False)
                os.environ.clear()
                os.environ.update(env)
                import torch

                torch.set_num_threads(int(env.get("OMP_NUM_THREADS", "1")))
                sys.argv = ["lit-transfer", *args]
                from lit_transfer.cli import main as cli_main

                cli_main(args)
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except BaseException:  # noqa: BLE001 - a trial's crash is recorded from its log
                import traceback

                traceback.print_exc()
            finally:
                with contextlib.suppress(Exception):
                    sys.stdout.flush()
                    sys.stderr.flush()
                os._exit(code)

    cpu_time_s: float | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            _reap(self, os.WNOHANG)
        return self.returncode

    def wait(self) -> int:
        if self.returncode is None:
            _reap(self, 0)
        return self.returncode


class SpawnedTrial(subprocess.Popen):
    """A trial spawned as its own process: ``subprocess.Popen`` that also records the CPU time it used."""

    cpu_time_s: float | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                _reap(self, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere: Popen knows what to report
                return super().poll()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None and timeout is None:
            with contextlib.suppress(ChildProcessError):
                _reap(self, 0)
        return super().wait(timeout) if self.returncode is None else self.returncode


def _reap(proc, options: int) -> None:
    """``os.wait4`` on a trial's process: its exit code (-N when killed by signal N, like Popen) and the CPU
    time (user + system) of the process and of the children it waited for (a source stage, loader workers)."""
    pid, status, usage = os.wait4(proc.pid, options)
    if pid:
        proc.cpu_time_s = usage.ru_utime + usage.ru_stime
        proc.returncode = os.waitstatus_to_exitcode(status)


# ----------------------------------------------------------------------------------------------- runner
@dataclass
class Trial:
    id: str
    params: dict
    dir: Path


@dataclass
class _Running:
    trial: Trial
    proc: SpawnedTrial | ForkedTrial
    log: Any
    command: list[str]
    expects_result: bool  # our CLI: success means a result.json, not just exit code 0
    started: float = field(default_factory=time.time)


class Runner:
    def __init__(self, cfg: dict, out: Path, workers: int, progress: Progress, threads: int = DEFAULT_THREADS,
                 fork: bool = True):
        self.cfg, self.out, self.workers, self.progress, self.fork = cfg, out, workers, progress, fork
        self.env = trial_env(out, threads)
        self.running: list[_Running] = []
        self.failed: list[str] = []
        self.warm = False  # warm_up() ran: trials fork from a runner that has imported and parsed once

    def start(self, trial: Trial) -> None:
        if trial.dir.exists():
            _move_aside(trial.dir, self.out / "attic")
        trial.dir.mkdir(parents=True)
        cmd = build_command(self.cfg, trial.params, trial.dir, stage_cache_of(self.out))
        if "${args_json_file}" in map(str, self.cfg.get("command", [])):
            atomic.write_json(trial.dir / "args.json", trial.params)
        info = {"schema": 1, "trial_id": trial.id, "status": "running", "params": trial.params,
                "command": cmd, "inputs": command_inputs(cmd), "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        atomic.write_json(trial.dir / "trial.json", info)
        log = open(trial.dir / "trial.log", "wb")
        proc = None
        try:
            # Own session: the terminal's Ctrl-C reaches the runner only, which then stops trials in order.
            args = forkable_args(cmd, self.fork)
            # Our CLI gets its directory as --run.dir; other programs only through the environment.
            env = self.env if cmd[-2:] == ["--run.dir", str(trial.dir)] else {
                **self.env, "LIT_TRANSFER_RUN_DIR": str(trial.dir)}
            if args is not None:
                if not self.warm:
                    warm_up(args)
                    self.warm = True
                proc = ForkedTrial(args, log, env)
            else:
                proc = SpawnedTrial(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=env, start_new_session=True)
        except OSError as e:
            log.close()
            self._record(trial, cmd, "failed", time.time(), error=f"cannot start {cmd[0]}: {e}")
            return
        finally:
            if proc is not None:  # registered even if Ctrl-C lands right here, so stop_all() reaches it
                self.running.append(_Running(trial, proc, log, cmd, cmd[-2:] == ["--run.dir", str(trial.dir)]))
                self.progress.running += 1
        self.progress.update()

    def poll(self) -> list[tuple[Trial, str]]:
        done = []
        for r in list(self.running):
            if r.proc.poll() is None:
                continue
            self.running.remove(r)
            self.progress.running -= 1
            r.log.close()
            rc = r.proc.returncode
            error = failure_reason(r.trial.dir) if rc != 0 or trial_state(r.trial.dir) == "failed" else None
            if rc == 0 and r.expects_result and not (r.trial.dir / "result.json").exists():
                error = "exited 0 but wrote no result.json"
            status = "ok" if rc == 0 and error is None else "failed"
            self._record(r.trial, r.command, status, r.started, rc=rc, error=error, cpu=r.proc.cpu_time_s)
            done.append((r.trial, status))
        return done

    def _record(self, trial: Trial, cmd: list[str], status: str, started: float,
                rc: int | None = None, error: str | None = None, cpu: float | None = None) -> None:
        wall = time.time() - started
        info = {"schema": 1, "trial_id": trial.id, "status": status, "params": trial.params, "command": cmd,
                "inputs": command_inputs(cmd), "wall_time_s": round(wall, 3),
                "ended_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        if cpu is not None:  # the trial process's CPU seconds (user + system), its waited-for children included
            info["cpu_time_s"] = round(cpu, 3)
        if rc is not None:
            info["returncode"] = rc
            if rc < 0:
                info["signal"] = signal.Signals(-rc).name
        if error:
            info["error"] = error
        if status != "ok":
            info["log_tail"] = _log_tail(trial.dir / "trial.log")
        atomic.write_json(trial.dir / "trial.json", info)
        if status == "ok":
            self.progress.ok += 1
            self.progress.durations.append(wall)
            self.progress.update(f"ok      {trial.id} ({_fmt_duration(wall)})")
        elif status == "failed":
            self.progress.failed += 1
            self.failed.append(trial.id)
            why = error or (f"killed by {info['signal']}" if info.get("signal") else f"exit code {rc}")
            self.progress.update(f"FAILED  {trial.id}: {why} (log: {trial.dir / 'trial.log'})")

    def stop_all(self) -> None:
        """SIGTERM every trial's process group, SIGKILL what is left after a grace period."""
        for r in self.running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(r.proc.pid, signal.SIGTERM)
        deadline = time.time() + KILL_GRACE_S
        try:
            while time.time() < deadline and any(r.proc.poll() is None for r in self.running):
                time.sleep(0.05)
        except KeyboardInterrupt:  # a second Ctrl-C: stop waiting
            pass
        for r in self.running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(r.proc.pid, signal.SIGKILL)
            r.proc.wait()
            r.log.close()
            # A result written before the signal landed is complete (the CLI writes it atomically): keep it.
            if not (r.trial.dir / "result.json").exists():
                self._record(r.trial, r.command, "interrupted", r.started, rc=r.proc.returncode,
                             cpu=r.proc.cpu_time_s)
        self.running.clear()

    def run(self, next_trial: Callable[[], Trial | None], on_done: Callable[[Trial, str], None] | None = None):
        exhausted = False
        while True:
            while not exhausted and len(self.running) < self.workers:
                trial = next_trial()
                if trial is None:
                    exhausted = True
                else:
                    self.start(trial)
            for trial, status in self.poll():
                if on_done:
                    on_done(trial, status)
            if exhausted and not self.running:
                return
            time.sleep(POLL_S)


def _bayes_next(cfg: dict, out: Path, cap: int, constants: tuple[str, ...]) -> Callable[[], Trial | None]:
    """Proposals from W&B's own engine, fed with every trial in `out` (so a re-run continues the search)."""
    try:
        from sweeps import RunState, SweepRun, next_run
    except ImportError:
        raise SweepError("method bayes needs W&B's sweep engine: `pip install sweeps`, "
                         "or use method grid or random") from None
    metric = cfg["metric"]["name"]
    engine_cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
    engine_cfg["parameters"] = {n: {k: v for k, v in s.items()} for n, s in cfg["_params"].items()}
    started: set[str] = set()

    def history() -> list:
        runs = []
        for d in sorted((out / "trials").glob("*")):
            info = _read_json(d / "trial.json") or {}
            if "params" not in info:
                continue
            state, summary = trial_state(d), {}
            if state == "ok":
                value = ((_read_json(d / "result.json") or {}).get("metrics") or {}).get(metric)
                summary = {metric: value} if value is not None else {}
            rs = {"ok": RunState.finished, "failed": RunState.failed}.get(
                state, RunState.running if d.name in started else RunState.failed)
            runs.append(SweepRun(name=d.name, state=rs, summary_metrics=summary,
                                 config={k: {"value": v} for k, v in info["params"].items()}))
        return runs

    def next_trial() -> Trial | None:
        runs = history()
        if len(runs) >= cap:
            return None
        proposal = next_run(engine_cfg, runs)
        if proposal is None:
            return None
        params = {k: (v["value"].item() if hasattr(v["value"], "item") else v["value"])
                  for k, v in proposal.config.items()}
        tid = trial_id(params, constants)
        started.add(tid)
        return Trial(tid, params, out / "trials" / tid)

    return next_trial


def run_sweep(path: str | os.PathLike, out: str | os.PathLike | None = None, workers: int = 1,
              retry_failed: bool = False, run_cap: int | None = None, dry_run: bool = False,
              stream=None, threads: int = DEFAULT_THREADS, fork: bool = True) -> int:
    """Run (or resume) a sweep file; ``fork=False`` spawns every trial as its own process (as ``wandb agent``
    does) instead of forking our CLI's trials from this pre-imported process."""
    stream = stream or sys.stderr
    from lit_transfer.configs import resolve

    path = resolve(path, "sweeps")  # sweeps/x.yaml from any directory: the shipped file
    cfg = load_sweep(path)
    name = Path(path).stem
    out = Path(out) if out else Path("sweep_runs") / name
    if workers < 1:
        raise SweepError("--workers must be at least 1")
    if threads < 1:
        raise SweepError("--threads must be at least 1")
    constants = _constants(cfg)
    cap = run_cap if run_cap is not None else cfg.get("run_cap")
    # every trial already in out, planned now or not: a changed constant gives new trial ids, not new results
    check_same_command(cfg, out, [(d.name, info["params"]) for d in sorted((out / "trials").glob("*"))
                                  for info in [_read_json(d / "trial.json") or {}] if "params" in info])

    if cfg["method"] == "bayes":
        if not cap:
            raise SweepError("method bayes needs `run_cap` in the sweep file or --run-cap")
        if dry_run:
            print(f"{name}: bayes proposes trials one at a time; up to {cap} trials in {out}", file=stream)
            return 0
        next_trial = _bayes_next(cfg, out, cap, constants)
        states = {d.name: trial_state(d) for d in sorted((out / "trials").glob("*"))}
        skipped, total = sum(s == "ok" for s in states.values()), cap
        old_failed = [t for t, s in states.items() if s == "failed"]  # history for the engine, not retried
    else:
        trials = [Trial(tid, p, out / "trials" / tid)
                  for p in plan_trials(cfg, cap) for tid in [trial_id(p, constants)]]
        states = {t.id: trial_state(t.dir) for t in trials}
        if dry_run:
            for t in trials:
                print(f"{states[t.id]:8s} {t.id}\n         "
                      f"{shlex.join(build_command(cfg, t.params, t.dir, stage_cache_of(out)))}")
            print(f"{name}: {len(trials)} trials, {sum(s == 'ok' for s in states.values())} done", file=stream)
            return 0
        old_failed = [t.id for t in trials if states[t.id] == "failed" and not retry_failed]
        todo = [t for t in trials if states[t.id] == "pending" or (states[t.id] == "failed" and retry_failed)]
        skipped, total = sum(s == "ok" for s in states.values()), len(trials)
        it = iter(todo)
        next_trial = lambda: next(it, None)  # noqa: E731

    out.mkdir(parents=True, exist_ok=True)
    lock = open(out / ".sweep.lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise SweepError(f"another sweep is already running in {out}") from None
    atomic.write_text(out / "sweep.yaml", Path(path).read_text())

    progress = Progress(name, total, workers, stream)
    progress.ok, progress.failed = skipped, len(old_failed)
    if skipped or old_failed:
        hint = " (--retry-failed to rerun failed)" if old_failed else ""
        progress.update(f"resuming: {skipped} done, {len(old_failed)} failed kept{hint}")
    runner = Runner(cfg, out, workers, progress, threads, fork)

    def _sigterm(signum, frame):
        raise KeyboardInterrupt

    previous = None
    with contextlib.suppress(ValueError):  # not in the main thread: no handler, Ctrl-C handling still works
        previous = signal.signal(signal.SIGTERM, _sigterm)
    try:
        runner.run(next_trial)
    except KeyboardInterrupt:
        progress.update(f"interrupted: stopping {len(runner.running)} running trial(s)")
        runner.stop_all()
        progress.close()
        print(f"{name}: interrupted; {progress.ok} ok, {progress.failed} failed. "
              f"Re-run the same command to resume.", file=stream)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        lock.close()
    progress.close()
    failed = old_failed + runner.failed
    summary = f"{name}: {progress.ok} ok ({skipped} already done), {len(failed)} failed, results in {out}"
    if failed:
        summary += f"\nfailed trials (logs in {out}/trials/<id>/trial.log):"
        for tid in failed:
            reason = (_read_json(out / "trials" / tid / "trial.json") or {}).get("error")
            summary += f"\n  {tid}: {reason or 'see its log'}"
    print(summary, file=stream)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description="Run a W&B sweep file locally, one subprocess "
                                     "per trial, resumable.")
    parser.add_argument("file", help="sweep YAML (W&B sweep format)")
    parser.add_argument("--out", help="output directory (default: sweep_runs/<file stem>)")
    parser.add_argument("--workers", type=int, default=1, help="trials run in parallel (default 1)")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                        help="intra-op CPU threads of every trial (default 1), whatever --workers is: results are "
                             "bit-identical for any number of workers")
    parser.add_argument("--retry-failed", action="store_true", help="rerun trials that failed before (grid/random)")
    parser.add_argument("--run-cap", type=int, help="maximum number of trials (overrides run_cap)")
    parser.add_argument("--dry-run", action="store_true", help="list trials and commands, run nothing")
    args = parser.parse_args(argv)
    try:
        return run_sweep(args.file, args.out, args.workers, args.retry_failed, args.run_cap, args.dry_run,
                         threads=args.threads)
    except SweepError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
