"""One ``lit-transfer sweep`` run: plan (or resume) the trials of a sweep file in ``out``, hold its lock, run
them with the :class:`Runner`, stop them in order on Ctrl-C / SIGTERM, and print the summary."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shlex
import signal
import sys
from pathlib import Path

from lit_transfer import atomic
from lit_transfer.sweep.bayes import bayes_next
from lit_transfer.sweep.command import build_command, stage_cache_of
from lit_transfer.sweep.errors import SweepError
from lit_transfer.sweep.identity import check_same_command
from lit_transfer.sweep.planning import Trial, plan_trials, trial_id
from lit_transfer.sweep.processes import DEFAULT_THREADS
from lit_transfer.sweep.progress import Progress
from lit_transfer.sweep.runner import Runner
from lit_transfer.sweep.spec import constant_names, load_sweep
from lit_transfer.sweep.trials import read_json, recorded_trials, trial_state


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
    constants = constant_names(cfg)
    cap = run_cap if run_cap is not None else cfg.get("run_cap")
    # every trial already in out, planned now or not: a changed constant gives new trial ids, not new results
    check_same_command(cfg, out, recorded_trials(out))

    if cfg["method"] == "bayes":
        if not cap:
            raise SweepError("method bayes needs `run_cap` in the sweep file or --run-cap")
        if dry_run:
            print(f"{name}: bayes proposes trials one at a time; up to {cap} trials in {out}", file=stream)
            return 0
        next_trial = bayes_next(cfg, out, cap, constants)
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
            reason = (read_json(out / "trials" / tid / "trial.json") or {}).get("error")
            summary += f"\n  {tid}: {reason or 'see its log'}"
    print(summary, file=stream)
    return 1 if failed else 0
