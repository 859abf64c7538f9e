"""The scheduler: up to ``workers`` trials at a time, each its own process in its own process group (so a crash
costs one trial, never the sweep), each ending recorded in its ``trial.json`` and on the progress line."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from lit_transfer import atomic
from lit_transfer.sweep.command import build_command, runs_our_cli, stage_cache_of
from lit_transfer.sweep.planning import Trial
from lit_transfer.sweep.processes import (DEFAULT_THREADS, ForkedTrial, SpawnedTrial, forkable_args, trial_env,
                                          warm_up)
from lit_transfer.sweep.progress import Progress, fmt_duration
from lit_transfer.sweep.trials import failure_reason, move_aside, trial_state, write_ended, write_started

KILL_GRACE_S = 10.0
POLL_S = 0.02  # how often the runner checks its trials: a finished trial's slot is refilled within this


@dataclass
class _Running:
    trial: Trial
    proc: SpawnedTrial | ForkedTrial
    log: Any
    command: list[str]
    started: float = field(default_factory=time.time)


class Runner:
    """Starts, polls and stops the trials of one sweep in ``out``."""

    def __init__(self, cfg: dict, out: Path, workers: int, progress: Progress, threads: int = DEFAULT_THREADS,
                 fork: bool = True):
        self.cfg, self.out, self.workers, self.progress, self.fork = cfg, out, workers, progress, fork
        self.env = trial_env(threads)
        # our CLI gets its directory as --run.dir and succeeds by writing a result.json, not just exit code 0
        self.our_cli = runs_our_cli(cfg)
        self.running: list[_Running] = []
        self.failed: list[str] = []
        self.warm = False  # warm_up() ran: trials fork from a runner that has imported and parsed once

    def start(self, trial: Trial) -> None:
        if trial.dir.exists():
            move_aside(trial.dir, self.out / "attic")
        trial.dir.mkdir(parents=True)
        cmd = build_command(self.cfg, trial.params, trial.dir, stage_cache_of(self.out))
        if "${args_json_file}" in map(str, self.cfg.get("command", [])):
            atomic.write_json(trial.dir / "args.json", trial.params)
        write_started(trial, cmd)
        log = open(trial.dir / "trial.log", "wb")
        proc = None
        try:
            # Own session: the terminal's Ctrl-C reaches the runner only, which then stops trials in order.
            args = forkable_args(cmd, self.fork)
            # Our CLI gets its directory as --run.dir; other programs only through the environment.
            env = self.env if self.our_cli else {**self.env, "LIT_TRANSFER_RUN_DIR": str(trial.dir)}
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
                self.running.append(_Running(trial, proc, log, cmd))
                self.progress.running += 1
        self.progress.update()

    def poll(self) -> None:
        """Record every trial that ended since the last poll."""
        for r in list(self.running):
            if r.proc.poll() is None:
                continue
            self.running.remove(r)
            self.progress.running -= 1
            r.log.close()
            rc = r.proc.returncode
            error = failure_reason(r.trial.dir) if rc != 0 or trial_state(r.trial.dir) == "failed" else None
            if rc == 0 and self.our_cli and not (r.trial.dir / "result.json").exists():
                error = "exited 0 but wrote no result.json"
            status = "ok" if rc == 0 and error is None else "failed"
            self._record(r.trial, r.command, status, r.started, rc=rc, error=error, cpu=r.proc.cpu_time_s)

    def _record(self, trial: Trial, cmd: list[str], status: str, started: float,
                rc: int | None = None, error: str | None = None, cpu: float | None = None) -> None:
        wall = time.time() - started
        info = write_ended(trial, cmd, status, wall, rc=rc, error=error, cpu=cpu)
        if status == "ok":
            self.progress.ok += 1
            self.progress.durations.append(wall)
            self.progress.update(f"ok      {trial.id} ({fmt_duration(wall)})")
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

    def run(self, next_trial: Callable[[], Trial | None]) -> None:
        """Keep up to ``workers`` trials running until ``next_trial`` has none left and every trial ended."""
        exhausted = False
        while True:
            while not exhausted and len(self.running) < self.workers:
                trial = next_trial()
                if trial is None:
                    exhausted = True
                else:
                    self.start(trial)
            self.poll()
            if exhausted and not self.running:
                return
            time.sleep(POLL_S)
