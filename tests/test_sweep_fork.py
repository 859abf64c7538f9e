"""Trials forked from the pre-imported runner behave like spawned ones: exit codes, signals, logs."""

from __future__ import annotations

import os
import signal
import sys
import time

from lit_transfer.sweep import ForkedTrial, forkable_args


def test_forkable_only_for_this_python_running_lit_transfer_on_one_device():
    here = sys.executable
    assert forkable_args(["/usr/bin/env", here, "-m", "lit_transfer", "fit", "--x=1"]) == ["fit", "--x=1"]
    assert forkable_args([here, "-m", "lit_transfer", "fit"]) == ["fit"]
    assert forkable_args(["/usr/bin/env", "/other/python", "-m", "lit_transfer", "fit"]) is None
    assert forkable_args(["/usr/bin/env", here, "train.py"]) is None
    assert forkable_args([here, "-m", "lit_transfer", "fit", "--trainer.strategy=ddp"]) is None
    assert forkable_args(["/usr/bin/env", "A=1", here, "-m", "lit_transfer", "fit"]) is None


def test_forked_trial_reports_cli_exit_code_and_log(tmp_path):
    log = open(tmp_path / "trial.log", "wb")
    trial = ForkedTrial(["fit", "--model.backbone=resnet181", "--trainer.fast_dev_run=true",
                         f"--run.root={tmp_path}"], log, dict(os.environ))
    assert trial.wait() == 2
    log.close()
    text = (tmp_path / "trial.log").read_text()
    assert "lit-transfer: error: unknown backbone 'resnet181'" in text


def test_forked_trial_killed_by_sigkill_reports_the_signal(tmp_path):
    log = open(tmp_path / "trial.log", "wb")
    from conftest import REPO

    trial = ForkedTrial(["fit", "--config", str(REPO / "configs/data/digits_shift.yaml"),
                         "--trainer.max_epochs=1000", f"--run.root={tmp_path}"], log, dict(os.environ))
    time.sleep(0.5)
    os.killpg(trial.pid, signal.SIGKILL)  # its own process group, like a spawned trial
    deadline = time.time() + 30
    while trial.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    log.close()
    assert trial.returncode == -signal.SIGKILL


def test_fork_off_spawns_every_trial():
    # run_sweep(fork=False) / Runner(fork=False): spawned like wandb's agent does (no env var involved)
    here = sys.executable
    assert forkable_args(["/usr/bin/env", here, "-m", "lit_transfer", "fit"], fork=False) is None
