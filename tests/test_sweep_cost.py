"""What a sweep trial costs besides training: measured in result.json and trial.json, and the same results
whether the trial is forked from the warm runner or spawned as its own process."""

from __future__ import annotations

import json

import yaml

from conftest import REPO
from lit_transfer.sweep import run_sweep

COMMAND = ["${env}", "${interpreter}", "-m", "lit_transfer", "fit",
           "--config", str(REPO / "configs/data/digits_shift.yaml"), "--config", str(REPO / "configs/model/small_cnn.yaml"),
           "--model.weights=null", "--trainer.max_epochs=-1", "--trainer.max_steps=4", "--trainer.val_check_interval=2",
           "--trainer.check_val_every_n_epoch=null", "${args}"]


def one_trial(tmp_path, fork: bool) -> tuple[dict, dict]:
    path = tmp_path / "cost.yaml"
    path.write_text(yaml.safe_dump({"method": "grid", "command": COMMAND,
                                    "parameters": {"model.lr": {"values": [0.01]}, "seed_everything": {"value": 3}}}))
    out = tmp_path / ("fork" if fork else "spawn")
    with open(tmp_path / f"{out.name}.log", "w") as log:
        assert run_sweep(path, out, stream=log, fork=fork) == 0
    (trial,) = (out / "trials").iterdir()
    return json.loads((trial / "trial.json").read_text()), json.loads((trial / "result.json").read_text())


def test_forked_and_spawned_trials_record_their_cost_and_give_identical_metrics(tmp_path):
    forked_info, forked = one_trial(tmp_path, fork=True)
    spawned_info, spawned = one_trial(tmp_path, fork=False)
    for info, result in ((forked_info, forked), (spawned_info, spawned)):
        assert info["status"] == "ok"
        assert info["cpu_time_s"] > 0  # the trial process's user + system time, from wait4
        assert 0 < result["fit_time_s"] < info["wall_time_s"]  # fit and test, without the data build
        assert result["fit_cpu_s"] > 0
        assert result["data_time_s"] >= 0
    assert forked["metrics"] == spawned["metrics"]  # bit-identical: JSON floats round-trip exactly
    assert forked["config_hash"] == spawned["config_hash"] and forked["split_hash"] == spawned["split_hash"]
    # the spawned trial also imported torch and Lightning: it cost more CPU than the forked one
    assert spawned_info["cpu_time_s"] > forked_info["cpu_time_s"]


def test_the_runner_warms_up_once_before_its_first_fork(tmp_path, monkeypatch):
    from lit_transfer.sweep import runner

    calls = []
    real = runner.warm_up

    def counting(args):
        calls.append((list(args), list((tmp_path / "out" / "trials").glob("*/result.json"))))
        real(args)

    monkeypatch.setattr(runner, "warm_up", counting)
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump({"method": "grid", "command": COMMAND,
                                    "parameters": {"model.lr": {"values": [0.01, 0.02]}}}))
    with open(tmp_path / "log", "w") as log:
        assert run_sweep(path, tmp_path / "out", stream=log) == 0
    assert len(calls) == 1 and calls[0][1] == []  # once, before any trial ran
    assert calls[0][0][0] == "fit" and calls[0][0][-2] == "--run.dir"  # the first trial's own command line
    assert len(list((tmp_path / "out" / "trials").glob("*/result.json"))) == 2
    assert runner.POLL_S <= 0.02
