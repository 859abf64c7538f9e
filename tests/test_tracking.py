import glob
import json

import pytest
from conftest import wandb_records

from lit_transfer import tracking


def test_resolve_wandb_mode(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(tracking, "_notified", False)
    home = {"HOME": str(tmp_path), "NETRC": str(tmp_path / "netrc")}
    assert tracking.resolve_wandb_mode({"WANDB_MODE": "disabled"}) == "disabled"
    assert tracking.resolve_wandb_mode({**home, "WANDB_API_KEY": "k" * 40}) == "online"
    assert tracking.resolve_wandb_mode(home) == "offline"
    assert tracking.resolve_wandb_mode(home) == "offline"
    err = capsys.readouterr().err
    assert err.count("wandb sync") == 1 and err.count("\n") == 1  # one notice, one line
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password " + "x" * 40 + "\n")
    assert tracking.resolve_wandb_mode(home) == "online"
    assert tracking.wandb_online({**home, "WANDB_MODE": "offline"}) is False


def test_wandb_run_info_from_cli_config_and_result():
    cfg = {"seed_everything": 2, "run": {"experiment": "digits_shift", "strategy": "lp_ft"},
           "data": {"target_shots": 5}}
    info = tracking.wandb_run_info(cfg)
    assert info == {"group": "digits_shift", "job_type": "lp_ft", "tags": ["lp_ft", "shots=5", "seed=2"],
                    "name": "lp_ft-shots5-seed2"}
    result = {"experiment": "e", "strategy": "scratch", "seed": 0, "target_shots": None}
    assert tracking.wandb_run_info(result)["tags"] == ["scratch", "shots=all", "seed=0"]


def test_transfer_gain_needs_same_seed_shots_split(tmp_path):
    r = {"seed": 0, "target_shots": 5, "split_hash": "a", "metrics": {"target/test_acc": 0.8}}
    base = {**r, "metrics": {"target/test_acc": 0.7}}
    assert tracking.transfer_gain(r, base) == pytest.approx(0.1)
    (tmp_path / "result.json").write_text(json.dumps(base))
    assert tracking.transfer_gain(r, tmp_path / "result.json") == pytest.approx(0.1)
    assert tracking.transfer_gain(r, {**base, "split_hash": "b"}) is None
    assert tracking.transfer_gain(r, None) is None


@pytest.mark.slow  # starting a real (offline) W&B run takes several seconds
def test_push_config_nested_into_offline_run(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from lightning.pytorch.loggers import WandbLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    logger = WandbLogger(offline=True, save_dir=str(tmp_path), project="lit_transfer_test")
    config = {"model": {"lr": 0.003, "optimizer": {"class_path": "torch.optim.AdamW",
                                                   "init_args": {"weight_decay": 0.01}}},
              "data": {"target_shots": 5}, "path": tmp_path}
    tracking.push_config(logger, config)
    summary = tracking.push_summary(
        logger, {"seed": 0, "target_shots": 5, "split_hash": "a", "metrics": {"target/test_acc": 0.8}},
        baseline={"seed": 0, "target_shots": 5, "split_hash": "a", "metrics": {"target/test_acc": 0.75}})
    assert summary["transfer_gain"] == pytest.approx(0.05)
    assert dict(logger.experiment.config)["model"]["optimizer"]["init_args"] == {"weight_decay": 0.01}
    logger.experiment.finish()

    runs = glob.glob(str(tmp_path / "wandb" / "offline-run-*"))
    assert len(runs) == 1
    # offline runs keep their records in the .wandb file; config items are stored per top-level key as JSON
    data = wandb_records(glob.glob(runs[0] + "/run-*.wandb")[0], b"transfer_gain")
    assert b'{"lr":0.003,"optimizer":{"class_path":"torch.optim.AdamW","init_args":{"weight_decay":0.01}}}' in data
    assert b'{"target_shots":5}' in data
    assert b"model/lr" not in data and b"model.lr" not in data  # nested, no flattened duplicates
    assert b"transfer_gain" in data
    for f in glob.glob(str(tmp_path / "**"), recursive=True):  # no API key written anywhere
        if f.endswith((".wandb", ".log", ".yaml", ".json", ".txt")):
            assert b"WANDB_API_KEY" not in open(f, "rb").read()
