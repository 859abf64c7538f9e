"""The ``lit-transfer`` entry points and options: ``--strategy`` (order-independent, in YAML, documented),
shipped configs from any directory, the runs root, the stage cache, ``fit --help``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from lit_transfer import configs
from lit_transfer.cli import main

BASE = ["--config", str(REPO / "configs/data/digits_shift.yaml"), "--config", str(REPO / "configs/model/small_cnn.yaml")]
TINY = ["--trainer.max_steps=2", "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false",
        "--data.target_shots=3", "--run.test_after_fit=false"]


def printed_config(capsys, *args: str) -> dict:
    """``lit-transfer fit ... --print_config``: the resolved config, as the parser produced it."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["fit", *args, "--print_config"])
    assert exc.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


def user_error(capfd, *args: str) -> str:
    os.environ.pop("LIT_TRANSFER_RUN_DIR", None)
    capfd.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    err = capfd.readouterr().err
    assert exc.value.code == 2 and "Traceback" not in err, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("lit-transfer: error: "), last
    return last


@pytest.fixture
def my_strategy(tmp_path) -> Path:
    """A configs folder with one strategy that sets its own lr (the case an argv rewrite got wrong)."""
    folder = tmp_path / "my_configs" / "strategy"
    folder.mkdir(parents=True)
    (folder / "mine.yaml").write_text("run:\n  strategy: mine\nmodel:\n  lr: 0.5\n  backbone_lr_scale: 0.25\n")
    return folder.parent


def test_strategy_is_applied_first_whatever_the_argument_order(capsys, my_strategy):
    path = str(my_strategy / "strategy" / "mine.yaml")
    before = printed_config(capsys, *BASE, "--strategy", path, "--model.lr=0.05")
    after = printed_config(capsys, *BASE, "--model.lr=0.05", "--strategy", path)  # as `wandb agent` orders them
    assert before == after
    assert after["model"]["lr"] == 0.05 and after["model"]["backbone_lr_scale"] == 0.25
    assert after["run"]["strategy"] == "mine" and after["strategy"] == path
    # an explicit --config after or before the strategy wins too
    override = my_strategy / "override.yaml"
    override.write_text("model:\n  backbone_lr_scale: 0.75\n")
    for args in (["--config", str(override), f"--strategy={path}"], [f"--strategy={path}", "--config", str(override)]):
        assert printed_config(capsys, *BASE, *args)["model"]["backbone_lr_scale"] == 0.75


def test_strategy_by_name_from_a_configs_folder_given_on_the_command_line(capsys, my_strategy):
    cfg = printed_config(capsys, *BASE, "--strategy=mine", f"--run.configs={my_strategy}")
    # (small_cnn.yaml's lr is an explicit config: it wins over the strategy's lr)
    assert cfg["model"]["backbone_lr_scale"] == 0.25 and cfg["model"]["lr"] == 0.003 and cfg["run"]["strategy"] == "mine"


def test_strategy_given_in_a_yaml_config(capsys, tmp_path):
    experiment = tmp_path / "experiment.yaml"
    experiment.write_text("strategy: finetune\nmodel:\n  lr: 0.02\n")
    cfg = printed_config(capsys, *BASE, "--model.backbone_lr_scale=0.9", "--config", str(experiment))
    assert cfg["run"]["strategy"] == "finetune" and cfg["strategy"] == "finetune"
    assert cfg["model"]["lr"] == 0.02 and cfg["model"]["backbone_lr_scale"] == 0.9  # explicit beats the strategy
    assert printed_config(capsys, *BASE, "--config", str(experiment))["model"]["backbone_lr_scale"] == 0.3


def test_unknown_strategy_is_one_line_listing_the_known_ones(capfd):
    last = user_error(capfd, "fit", *BASE, "--strategy=nope")
    assert "unknown strategy 'nope'" in last
    assert all(name in last for name in ("finetune", "linear_probe", "scratch", "l2sp"))


def test_shipped_configs_resolve_from_any_directory(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = printed_config(capsys, "--config", "configs/data/digits_shift.yaml", "--config",
                         "configs/model/small_cnn.yaml", "--strategy", "linear_probe")
    assert cfg["run"]["strategy"] == "linear_probe" and cfg["model"]["backbone"] == "small_cnn"
    assert configs.resolve("configs/data/digits_shift.yaml") == str(configs.shipped_root() / "data/digits_shift.yaml")


def test_fit_help_is_short_and_lists_the_projects_classes(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    text = capsys.readouterr().out
    assert len(text.splitlines()) < 600, len(text.splitlines())
    assert "--strategy" in text and all(name in text for name in configs.strategy_names())
    for name in ("LinearHead", "MLPHead", "CosineHead", "DANN", "CDAN", "MCC", "CORAL", "MMD", "MultiTask",
                 "Distill", "LwF", "L2SP"):
        assert name in text, name
    for option in ("--trainer.max_steps", "--trainer.precision", "--trainer.callbacks", "--run.stage_cache",
                   "--run.configs", "--model.objective", "--data.target_shots"):
        assert option in text, option


def test_subclass_help_by_short_name(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--model.objective.help", "DANN"])
    out = capsys.readouterr().out
    assert "lit_transfer.strategies.DANN" in out and "--model.objective.weight" in out


def fit_result(root: Path) -> dict:
    found = list(root.rglob("result.json"))
    assert len(found) == 1, found
    return json.loads(found[0].read_text())


@pytest.mark.slow
def test_trainer_default_root_dir_is_the_runs_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.environ.pop("LIT_TRANSFER_RUN_DIR", None)
    main(["fit", *BASE, *TINY, "--strategy=scratch", "--run.experiment=exp", f"--trainer.default_root_dir={tmp_path / 'mine'}"])
    result = fit_result(tmp_path / "mine")
    run_dir = Path(result["run_dir"])
    assert run_dir.parent == tmp_path / "mine" / "exp" / "scratch" and not (tmp_path / "runs").exists()
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["run"]["root"] == str(tmp_path / "mine") and saved["trainer"]["default_root_dir"] is None


def test_conflicting_run_locations_are_one_line_errors(tmp_path, capfd):
    last = user_error(capfd, "fit", *BASE, f"--run.root={tmp_path / 'a'}", f"--trainer.default_root_dir={tmp_path / 'b'}")
    assert "run.root" in last and "trainer.default_root_dir" in last
    last = user_error(capfd, "fit", *BASE, f"--run.dir={tmp_path / 'a'}", f"--trainer.default_root_dir={tmp_path / 'b'}")
    assert "run.dir" in last and "trainer.default_root_dir" in last
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_entry_dispatches_tools_and_python_m_runs_it(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    top = subprocess.run([sys.executable, "-m", "lit_transfer", "--help"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert top.returncode == 0 and "fit" in top.stdout and "sweep" in top.stdout, top.stderr[-2000:]
    report = subprocess.run([sys.executable, "-m", "lit_transfer", "report", "--help"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert report.returncode == 0 and "usage" in report.stdout.lower(), report.stderr[-2000:]


def test_cli_main_points_tools_to_the_entry(capfd):
    last = user_error(capfd, "rank", "--help")
    assert "lit_transfer.entry.main" in last


@pytest.mark.parametrize("order", ["weights_first", "strategy_first"])
def test_scratch_trains_from_random_init_even_when_the_experiment_names_weights(tmp_path, order):
    """A sweep names its weights once for every strategy (``--model.weights=source``, an explicit flag that wins
    over strategy configs); the scratch strategy still starts from random initialisation and trains no stage."""
    os.environ.pop("LIT_TRANSFER_RUN_DIR", None)
    pair = ["--model.weights=source", "--strategy=scratch"]
    args = pair if order == "weights_first" else pair[::-1]
    run_dir, stages = tmp_path / "run", tmp_path / "stages"
    main(["fit", *BASE, *args, *TINY, f"--run.dir={run_dir}", f"--run.stage_cache={stages}"])
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["model"]["weights"] is None and saved["run"]["transfer"] is False
    assert saved["run"]["strategy"] == "scratch"
    assert not stages.exists() or not any(stages.iterdir())  # no source model was trained for it
    assert json.loads((run_dir / "result.json").read_text())["status"] == "ok"
