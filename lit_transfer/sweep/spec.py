"""A sweep file, read and checked: the W&B sweep format (``method``, ``parameters``, ``command``, ``metric``,
``run_cap``), with every parameter's spec normalised and flattened to jsonargparse's dotted names."""

from __future__ import annotations

import os
import re
from pathlib import Path

import yaml

from lit_transfer.sweep.command import DEFAULT_COMMAND, MACROS
from lit_transfer.sweep.distributions import normalise
from lit_transfer.sweep.errors import SweepError

METHODS = ("grid", "random", "bayes")
TOP_KEYS = {"method", "parameters", "program", "command", "metric", "run_cap", "name", "description",
            "project", "entity", "early_terminate", "controller", "job", "image_uri"}


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
            out[full] = normalise(full, spec)
    return out


def constant_names(cfg: dict) -> tuple[str, ...]:
    """The parameters with one value (left out of the readable part of trial ids)."""
    return tuple(n for n, s in cfg["_params"].items() if s["distribution"] == "constant")


def constant_values(cfg: dict) -> dict:
    """The value of every constant parameter."""
    return {n: s["value"] for n, s in cfg["_params"].items() if s["distribution"] == "constant"}
