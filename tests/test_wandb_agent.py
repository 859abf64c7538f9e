"""The shipped sweep files as ``wandb agent`` runs them: command lines built by wandb's own agent code.

No server is involved: ``wandb.wandb_agent.Agent._command_run`` is given the run a W&B sweep server would send
(parameters sorted by name, as W&B's engine produces them) and builds the command line exactly as in
``wandb agent``; the process it would start is recorded instead. The commands then parse with our CLI from a
directory other than the repo root, and one of them trains (two steps) into an offline W&B run.
"""

from __future__ import annotations

import glob
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, wandb_records
from helpers import parsed_config

from lit_transfer import tracking
from lit_transfer.plan import command_line
from lit_transfer.sweep import build_command, load_sweep, plan_trials

pytest.importorskip("wandb")

SWEEPS = sorted((REPO / "sweeps").glob("*.yaml"))
SWEEP_ID = "sweep0test"


def agent_command(monkeypatch, tmp_path: Path, sweep_file: Path, params: dict, run_id: str = "run0test"):
    """(command, env) that ``wandb agent`` would start for a run of ``sweep_file`` with ``params``."""
    from wandb import wandb_agent

    started: dict = {}

    class RecordedProcess:  # stands in for wandb_agent.AgentProcess, which would start the command
        def __init__(self, command=None, env=None, **kwargs):
            started.update(command=command, env=env)

    monkeypatch.setattr(wandb_agent, "AgentProcess", RecordedProcess)
    # _command_run sets these in os.environ: declared here so that monkeypatch restores them afterwards
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SWEEP_ID", SWEEP_ID)
    monkeypatch.setenv("WANDB_RUN_ID", "")
    monkeypatch.setenv("WANDB_SWEEP_PARAM_PATH", "")
    agent = wandb_agent.Agent(api=None, queue=None, sweep_id=SWEEP_ID)
    sweep_config = yaml.safe_load(sweep_file.read_text())  # what Agent.run() reads from the server
    agent._sweep_command = sweep_config.get("command") or []
    agent._command_run({"run_id": run_id, "program": sweep_config.get("program"),
                        "args": {k: {"value": params[k]} for k in sorted(params)}})
    return started["command"], started["env"]


def cli_args(command: list[str]) -> list[str]:
    """The arguments of our CLI in an agent's command (``/usr/bin/env python -m lit_transfer <args>``)."""
    i = command.index("lit_transfer")
    assert command[i - 1] == "-m"
    return command[i + 1:]


def dig(config: dict, dotted: str):
    node = config
    for key in dotted.split("."):
        if isinstance(node, dict) and key not in node and isinstance(node.get("init_args"), dict):
            node = node["init_args"]
        node = node[key]
    return node


def sample_trials(cfg: dict) -> list[dict]:
    trials = plan_trials(cfg, run_cap=cfg.get("run_cap") or 1)
    picked = [trials[0]]
    # the baseline and a transfer strategy: scratch must stay random-init whatever the command line says
    for strategy in ("scratch", "finetune"):
        picked += [t for t in trials if t.get("strategy") == strategy][:1]
    return picked


@pytest.mark.slow  # one parse per trial (imports once, ~2 s per parse)
@pytest.mark.parametrize("sweep_file", SWEEPS, ids=[p.stem for p in SWEEPS])
def test_agent_commands_parse_like_our_runner_from_another_directory(sweep_file, tmp_path, monkeypatch, capsys):
    cfg = load_sweep(sweep_file)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # no configs/ here: paths in sweep files resolve to the shipped files
    for params in sample_trials(cfg):
        command, env = agent_command(monkeypatch, tmp_path, sweep_file, params)
        assert command[:2] == ["/usr/bin/env", "python"]
        # our runner launches the same arguments (plus its own --run.stage_cache and --run.dir)
        ours = build_command(cfg, params, tmp_path / "trial")
        assert cli_args(command) == cli_args(ours)[: -2]
        config = parsed_config(cli_args(command), capsys)
        for name, value in params.items():
            key = "run.strategy" if name == "strategy" else name
            assert dig(config, key) == value, (sweep_file.stem, name)
        if params.get("strategy") == "scratch":
            # scratch never loads the experiment's weights (the CLI drops them before instantiating:
            # tests/test_entry.py::test_scratch_trains_from_random_init_even_when_the_experiment_names_weights)
            assert dig(config, "run.transfer") is False
        assert env["WANDB_RUN_ID"] == "run0test" and env["WANDB_SWEEP_ID"] == SWEEP_ID


@pytest.mark.slow
def test_agent_none_value_parses_as_null(tmp_path, monkeypatch, capsys):
    """A sweep value ``null`` reaches the command line as ``None`` (the agent renders values with str())."""
    sweep_file = REPO / "sweeps" / "lr_scratch.yaml"
    monkeypatch.chdir(tmp_path)
    command, _ = agent_command(monkeypatch, tmp_path, sweep_file,
                               {"data.target_shots": None, "model.lr": 0.001, "seed_everything": 0})
    assert "--data.target_shots=None" in command
    config = parsed_config(cli_args(command), capsys)
    assert config["data"]["target_shots"] is None


def test_prepare_cli_args_none_and_loggers_without_save_dir():
    assert command_line.prepare_cli_args(["--data.target_shots=None", "--model.lr", "None", "--run.experiment=x"]) == [
        "--data.target_shots=null", "--model.lr", "null", "--run.experiment=x"]
    assert command_line.prepare_cli_args(["--trainer.logger=CSVLogger", "--x=1"]) == [
        "--trainer.logger=CSVLogger", "--trainer.logger.init_args.save_dir=<run dir>", "--x=1"]
    given = ["--trainer.logger=lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir=logs"]
    assert command_line.prepare_cli_args(given) == given  # the user's save_dir is kept (then pointed at the run dir)
    assert command_line.prepare_cli_args(["--trainer.logger=WandbLogger"]) == ["--trainer.logger=WandbLogger"]


def offline_run_files(root: Path) -> list[str]:
    return glob.glob(str(root / "**" / "wandb" / "offline-run-*" / "run-*.wandb"), recursive=True)


@pytest.mark.slow  # a real process: imports, a 2-step fit and an offline W&B run (~40 s on a small CPU)
def test_agent_run_trains_and_logs_to_an_offline_wandb_run(tmp_path, monkeypatch):
    sweep_file = REPO / "sweeps" / "lr_scratch.yaml"  # representative: strategy fixed, lr sampled, no stage
    cfg = load_sweep(sweep_file)
    params = plan_trials(cfg)[0]
    command, env = agent_command(monkeypatch, tmp_path, sweep_file, params, run_id="agentrun1")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    runs = tmp_path / "runs"
    env = {**env, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "HF_HUB_OFFLINE": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",  # the agent runs `python`
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)}
    tiny = ["--trainer.max_epochs=1", "--trainer.max_steps=-1", "--trainer.limit_train_batches=2",
            "--trainer.enable_progress_bar=false", f"--run.root={runs}"]
    proc = subprocess.run(command + tiny, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(next(runs.rglob("result.json")).read_text())
    files = offline_run_files(Path(result["run_dir"]))
    assert len(files) == 1 and "agentrun1" in files[0]  # joined the agent's run id, inside the run dir
    data = wandb_records(files[0], b"transfer_summary_never_written", timeout=5)
    for name in params:  # the flat keys the sweep engine reads back
        assert name.encode() in data, name
    assert b'"lr":' in data  # ... and the nested resolved config
    metric = cfg["metric"]["name"].encode()
    best = re.findall(re.escape(metric) + rb'.{0,4}\{"max":([0-9.eE+-]+)\}', data, flags=re.S)
    assert best, f"no best-value summary of {metric!r}"
    assert float(best[-1]) == pytest.approx(result["metrics"]["val_acc_best"], abs=1e-6)


@pytest.mark.slow  # an offline W&B run takes several seconds
def test_best_validation_value_is_the_summary(tmp_path, monkeypatch):
    from lightning.pytorch.loggers import WandbLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    logger = WandbLogger(offline=True, save_dir=str(tmp_path), project="lit_transfer_test")
    tracking.define_best_metrics(logger)
    for step, acc in enumerate([0.5, 0.9, 0.7]):
        logger.log_metrics({"target/val_acc": acc}, step=step)
    logger.experiment.finish()
    data = wandb_records(offline_run_files(tmp_path)[0], b'{"max":0.9}')
    assert b'{"max":0.9}' in data and b'{"max":0.7}' not in data
