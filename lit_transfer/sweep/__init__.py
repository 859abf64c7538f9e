"""Offline runner for W&B sweep files: `lit-transfer sweep FILE [--out DIR] [--workers N] ...`.

The same YAML runs unmodified under `wandb sweep` + `wandb agent`; this runner needs no server. Each trial is
its own process (forked from this pre-imported runner when it runs our CLI, spawned otherwise) with its
own directory `<out>/trials/<trial_id>/`, so a crash (exception, OOM kill, SIGKILL) costs one trial, never the
sweep. Trial ids are derived from the parameter values, so re-running the same command resumes: trials with a
result are skipped, failed ones are retried only with --retry-failed.

A trial is its full resolved command (every token but where it runs: interpreter path, run dir, stage cache)
plus the content of every ``--config`` file it names. A re-run whose command differs from the one a trial in
``<out>`` ran refuses with one line (results of two commands are never mixed in one directory, and
``sweep.yaml`` is never overwritten with a different command): give ``--out`` for the changed sweep.

The sweep's *spec* (what to run): ``spec`` (the file, checked), ``distributions``, ``planning`` (grid/random
trials and their ids), ``command`` (a trial's command line, W&B's macros expanded) and ``identity`` (what a
trial computes). The *runner* (how it runs): ``processes`` (environment, fork or spawn), ``trials`` (a trial's
files and state), ``progress``, ``runner`` (scheduling), ``bayes`` (W&B's engine proposes the trials), ``run``
(one sweep, resumed) and ``cli`` (the arguments).
"""

from lit_transfer.sweep.cli import main
from lit_transfer.sweep.command import build_command
from lit_transfer.sweep.errors import SweepError
from lit_transfer.sweep.planning import plan_trials, trial_id
from lit_transfer.sweep.processes import ForkedTrial, forkable_args
from lit_transfer.sweep.progress import Progress
from lit_transfer.sweep.run import run_sweep
from lit_transfer.sweep.spec import constant_names, load_sweep
from lit_transfer.sweep.trials import trial_state

__all__ = ["main", "run_sweep", "SweepError", "load_sweep", "constant_names", "plan_trials", "trial_id",
           "build_command", "ForkedTrial", "forkable_args", "Progress", "trial_state"]
