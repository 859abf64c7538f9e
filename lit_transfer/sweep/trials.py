"""A trial's files in ``<out>/trials/<id>/``: ``trial.json`` (what ran, how it ended), ``trial.log`` and the
CLI's ``result.json``; a trial's state and why it failed are read from them."""

from __future__ import annotations

import itertools
import json
import os
import signal
import time
from pathlib import Path

from lit_transfer import atomic
from lit_transfer.sweep.identity import command_inputs
from lit_transfer.sweep.planning import Trial


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def recorded_trials(out: Path) -> dict[str, dict]:
    """Trial id -> its ``trial.json``, for every trial in ``out`` that recorded its parameters."""
    return {d.name: info for d in sorted((Path(out) / "trials").glob("*"))
            for info in [read_json(d / "trial.json") or {}] if "params" in info}


def trial_result(trial_dir: Path):
    """The trial's ``result.json`` as a :class:`lit_transfer.results.Result`; ``None`` when it has none (or it
    cannot be read)."""
    if not (trial_dir / "result.json").exists():
        return None  # and torch stays unimported in a runner none of whose trials has a result yet
    from lit_transfer.results import Result

    return Result.read(trial_dir)


def trial_state(trial_dir: Path) -> str:
    """'ok' (has an ok result), 'failed' (incl. a result such as "diverged"), or 'pending' (never run,
    interrupted, or left by a killed runner)."""
    if (trial_dir / "result.json").exists():
        result = trial_result(trial_dir)
        return "ok" if result is not None and result.ok else "failed"
    info = read_json(trial_dir / "trial.json") or {}
    return info.get("status") if info.get("status") in ("ok", "failed") else "pending"


def failure_reason(trial_dir: Path) -> str | None:
    """Why a trial failed, in one line: its result's ``error`` (e.g. a diverged run), else the CLI's
    ``lit-transfer: error:`` line in its log."""
    result = trial_result(trial_dir)
    if result is not None and not result.ok:
        return f"{result.status}: {result.error}"
    prefix = "lit-transfer: error: "
    lines = [ln for ln in log_tail(trial_dir / "trial.log", max_lines=200).splitlines() if ln.startswith(prefix)]
    return lines[-1][len(prefix):] if lines else None


def log_tail(log: Path, max_bytes: int = 4000, max_lines: int = 30) -> str:
    try:
        with open(log, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - max_bytes))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-max_lines:])


def move_aside(trial_dir: Path, attic: Path) -> None:
    # Kept, not deleted: the log of a failed attempt is evidence; the CLI still gets a fresh directory.
    attic.mkdir(parents=True, exist_ok=True)
    for k in itertools.count(1):
        dest = attic / f"{trial_dir.name}.{k}"
        if not dest.exists():
            os.replace(trial_dir, dest)
            return


def write_started(trial: Trial, cmd: list[str]) -> None:
    """``trial.json`` of a trial that is starting."""
    info = {"schema": 1, "trial_id": trial.id, "status": "running", "params": trial.params,
            "command": cmd, "inputs": command_inputs(cmd), "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    atomic.write_json(trial.dir / "trial.json", info)


def write_ended(trial: Trial, cmd: list[str], status: str, wall: float, rc: int | None = None,
                error: str | None = None, cpu: float | None = None) -> dict:
    """``trial.json`` of a trial that ended (``ok``, ``failed`` or ``interrupted``); also returned."""
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
        info["log_tail"] = log_tail(trial.dir / "trial.log")
    atomic.write_json(trial.dir / "trial.json", info)
    return info
