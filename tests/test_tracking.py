import glob
import json
from pathlib import Path

import pytest
from conftest import wandb_records

from lit_transfer import tracking
from lit_transfer.plan import command_line


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


def test_wandb_run_info_from_the_resolved_config():
    cfg = {"seed_everything": 2, "run": {"experiment": "digits_shift", "strategy": "lp_ft"},
           "data": {"target_shots": 5}, "strategy": "/home/me/configs/my_lp_ft.yaml"}
    info = tracking.wandb_run_info(cfg)  # --strategy's value (here a path) is not the strategy's name
    assert info == {"group": "digits_shift", "job_type": "lp_ft", "tags": ["lp_ft", "shots=5", "seed=2"],
                    "name": "lp_ft-shots5-seed2"}
    cfg = {"seed_everything": 0, "run": {"experiment": "e", "strategy": "scratch"}, "data": {"target_shots": None}}
    assert tracking.wandb_run_info(cfg)["tags"] == ["scratch", "shots=all", "seed=0"]


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


# ------------------------------------------------------------------ gains over scratch, found under the runs root
def _write(run_dir, strategy, acc, seed=0, shots=5, split="a", experiment="digits_shift"):
    run_dir.mkdir(parents=True)
    r = {"status": "ok", "experiment": experiment, "strategy": strategy, "seed": seed, "target_shots": shots,
         "split_hash": split, "metrics": {"target/test_acc": acc}, "run_dir": str(run_dir)}
    (run_dir / "result.json").write_text(json.dumps(r))
    return r


def test_scratch_baselines_of_a_plain_fit_and_of_a_sweep_trial(tmp_path):
    # the CLI's layout: <root>/<experiment>/<strategy>/<stamp>
    root = tmp_path / "runs" / "digits_shift"
    _write(root / "scratch" / "s0", "scratch", 0.60)
    _write(root / "scratch" / "s1", "scratch", 0.70, seed=1)  # another seed: never paired
    _write(root / "scratch" / "s2", "scratch", 0.50, split="b")  # other labelled examples: never paired
    ft = _write(root / "finetune" / "f0", "finetune", 0.75)
    baselines = tracking.scratch_baselines(ft)
    assert sorted(b["run_dir"].rsplit("/", 1)[-1] for b in baselines) == ["s0", "s1", "s2"]
    assert tracking.transfer_gain(ft, baselines) == pytest.approx(0.15)
    # a sweep's layout: <out>/trials/<trial id>
    trials = tmp_path / "sweep" / "trials"
    _write(trials / "scratch-seed0", "scratch", 0.62)
    lp = _write(trials / "lp-seed0", "linear_probe", 0.52)
    assert tracking.transfer_gain(lp, tracking.scratch_baselines(lp)) == pytest.approx(-0.10)
    assert tracking.scratch_baselines(_write(trials / "scratch-seed1", "scratch", 0.6, seed=1)) == []


# ------------------------------------------------------------------ logger configuration
def _cli_config(logger, **run):
    from jsonargparse import Namespace

    return Namespace(trainer=Namespace(logger=logger), seed_everything=0,
                     run=Namespace(experiment="digits_shift", strategy=run.get("strategy", "finetune")),
                     data=Namespace(target_shots=5))


def _entries(cfg):
    logger = cfg.trainer.logger
    return [logger] if isinstance(logger, dict) else list(logger)


def test_loggers_write_into_the_run_dir_and_csv_needs_no_arguments(tmp_path):
    from jsonargparse import Namespace

    cfg = _cli_config(None)
    tracking.configure_loggers(cfg, tmp_path, env={})
    assert _entries(cfg) == [{"class_path": "lightning.pytorch.loggers.CSVLogger",
                              "init_args": {"save_dir": str(tmp_path), "name": "logs", "version": ""}}]
    # --trainer.logger=CSVLogger as the parser leaves it (save_dir: the placeholder of prepare_cli_args)
    given = Namespace(class_path="lightning.pytorch.loggers.CSVLogger",
                      init_args=Namespace(save_dir="<run dir>", name="lightning_logs", version=None))
    cfg = _cli_config(given)
    tracking.configure_loggers(cfg, tmp_path, env={})
    assert _entries(cfg)[0]["init_args"] == {"save_dir": str(tmp_path), "name": "logs", "version": ""}
    cfg = _cli_config(False)  # no logging asked for: none, not even under a sweep agent
    tracking.configure_loggers(cfg, tmp_path, env={"WANDB_SWEEP_ID": "s", "WANDB_RUN_ID": "r"})
    assert cfg.trainer.logger is False


def test_sweep_agent_run_gets_a_wandb_logger_joining_its_run(tmp_path, monkeypatch):
    env = {"WANDB_SWEEP_ID": "sw1", "WANDB_RUN_ID": "run7", "WANDB_PROJECT": "theirs", "WANDB_MODE": "offline"}
    cfg = _cli_config(None)
    tracking.configure_loggers(cfg, tmp_path, env=env)
    csv, wandb_logger = _entries(cfg)
    assert csv["class_path"].endswith("CSVLogger")  # the CSV default is kept
    assert wandb_logger["class_path"] == "lightning.pytorch.loggers.WandbLogger"
    init = wandb_logger["init_args"]
    assert init["id"] == "run7" and init["project"] == "theirs" and init["offline"] is True
    assert init["save_dir"] == str(tmp_path) and init["group"] == "digits_shift" and init["job_type"] == "finetune"
    # a config that brings its own WandbLogger keeps just that one (pointed at the agent's run)
    cfg = _cli_config({"class_path": "lightning.pytorch.loggers.WandbLogger", "init_args": {"project": "mine"}})
    tracking.configure_loggers(cfg, tmp_path, env=env)
    assert [e["init_args"]["id"] for e in _entries(cfg)] == ["run7"]
    # the source stage a trial trains first inherits the agent's environment: it must not join the trial's run
    cfg = _cli_config(None, strategy="source")
    tracking.configure_loggers(cfg, tmp_path, env=env)
    assert len(_entries(cfg)) == 1
    # not under an agent: no W&B unless asked for
    cfg = _cli_config(None)
    tracking.configure_loggers(cfg, tmp_path, env={"WANDB_MODE": "offline"})
    assert len(_entries(cfg)) == 1


def test_agent_parameters_read_from_the_agents_file(tmp_path):
    path = tmp_path / "config-run7.yaml"
    path.write_text("wandb_version: 1\n\nmodel.lr:\n  value: 0.003\nstrategy:\n  value: scratch\n"
                    "data.target_shots:\n  value: null\n")
    assert tracking.agent_parameters({"WANDB_SWEEP_PARAM_PATH": str(path)}) == {
        "model.lr": 0.003, "strategy": "scratch", "data.target_shots": None}
    assert tracking.agent_parameters({}) == {}


def test_tensorboard_logger_without_tensorboard_is_a_one_line_error(tmp_path, monkeypatch):
    import importlib.util

    from lit_transfer.errors import TransferConfigError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("tensorboard", "tensorboardX") else real(name, *a))
    cfg = _cli_config({"class_path": "lightning.pytorch.loggers.TensorBoardLogger", "init_args": {}})
    with pytest.raises(TransferConfigError, match=r"pip install 'lit-transfer\[tensorboard\]'") as err:
        tracking.configure_loggers(cfg, tmp_path, env={})
    assert "\n" not in str(err.value)


@pytest.mark.slow  # the real CLI: parse and instantiate (no training)
def test_cli_with_csv_logger_and_no_arguments(tmp_path, monkeypatch):
    from conftest import REPO

    from lit_transfer.cli import TransferCLI

    monkeypatch.delenv("LIT_TRANSFER_RUN_DIR", raising=False)
    args = ["--config", str(REPO / "configs/data/digits_shift.yaml"), "--trainer.logger=CSVLogger",
            f"--run.dir={tmp_path / 'run'}"]
    cli = TransferCLI(args=command_line.prepare_cli_args(args), run=False)
    from lightning.pytorch.loggers import CSVLogger

    assert isinstance(cli.trainer.logger, CSVLogger)
    assert Path(cli.trainer.logger.log_dir) == tmp_path / "run" / "logs"  # the default logger's files


@pytest.mark.slow
def test_cli_with_tensorboard_logger(tmp_path, monkeypatch, capsys):
    """Installed: TensorBoard logs into the run dir. Not installed: one line naming the fix, exit code 2."""
    import importlib.util

    from conftest import REPO

    from lit_transfer.cli import main

    monkeypatch.delenv("LIT_TRANSFER_RUN_DIR", raising=False)
    args = ["fit", "--config", str(REPO / "configs/data/digits_shift.yaml"), "--trainer.logger=TensorBoardLogger",
            "--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1",
            "--trainer.enable_progress_bar=false", "--run.test_after_fit=false", f"--run.dir={tmp_path / 'run'}"]
    if importlib.util.find_spec("tensorboard") is None and importlib.util.find_spec("tensorboardX") is None:
        with pytest.raises(SystemExit) as exit_:
            main(args)
        assert exit_.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == ["lit-transfer: error: trainer.logger=TensorBoardLogger needs TensorBoard: "
                       "pip install 'lit-transfer[tensorboard]'"]
    else:
        main(args)
        assert list((tmp_path / "run").rglob("events.out.tfevents.*"))


@pytest.mark.slow  # two tiny fits through the CLI and an offline W&B run
def test_plain_fit_gets_transfer_gain_over_scratch_under_the_same_root(tmp_path, monkeypatch):
    from conftest import REPO

    from lit_transfer.cli import main

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("LIT_TRANSFER_RUN_DIR", raising=False)
    base = ["fit", "--config", str(REPO / "configs/data/digits_shift.yaml"), "--config",
            str(REPO / "configs/model/small_cnn.yaml"), "--trainer.max_epochs=1", "--trainer.limit_train_batches=2",
            "--trainer.enable_progress_bar=false", "--data.target_shots=5", f"--run.root={tmp_path / 'runs'}"]
    main([*base, "--strategy=scratch"])
    monkeypatch.delenv("LIT_TRANSFER_RUN_DIR", raising=False)
    main([*base, "--trainer.logger=WandbLogger", "--model.lr=0.01"])  # strategy "custom", its own run dir
    results = {p.parent.parent.name: json.loads(p.read_text()) for p in (tmp_path / "runs").rglob("result.json")}
    assert set(results) == {"scratch", "custom"}
    gain = results["custom"]["metrics"]["target/test_acc"] - results["scratch"]["metrics"]["target/test_acc"]
    run = glob.glob(str(tmp_path / "runs" / "**" / "offline-run-*" / "run-*.wandb"), recursive=True)
    data = wandb_records(run[0], b"transfer_gain")
    assert b"transfer_gain" in data and json.dumps(gain).encode() in data
