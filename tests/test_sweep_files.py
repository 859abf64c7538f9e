"""The shipped sweep files: valid, pointing at existing configs, and (slow) runnable with the real CLI."""

import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from lit_transfer import report, sweep
from lit_transfer.sweep import build_command, load_sweep, plan_trials

REPO = Path(__file__).resolve().parent.parent
FILES = sorted((REPO / "sweeps").glob("*.yaml"))


def test_sweep_files_exist():
    names = {f.stem for f in FILES}
    assert {"digits_strategies", "cifar10_to_cifar100", "svhn_to_mnist"} <= names
    assert any(n.startswith("lr_") for n in names)


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_sweep_file_is_valid_and_references_configs(path):
    cfg = load_sweep(path)
    assert cfg["metric"] == {"name": "target/val_acc", "goal": "maximize"}
    trials = plan_trials(cfg)
    assert trials
    strategies = {t.get("strategy") for t in trials} | {
        c.split("=", 1)[1] for c in cfg["command"] if str(c).startswith("--strategy=")}
    for s in strategies - {None}:
        assert (REPO / "configs" / "strategy" / f"{s}.yaml").is_file(), s
    cmd = cfg["command"]
    configs = [cmd[i + 1] for i, c in enumerate(cmd) if c == "--config"]
    missing = [c for c in configs if not (REPO / c).is_file()]
    assert not missing, f"sweep file names configs that do not exist: {missing}"
    # scratch.yaml's `weights: null` must win over the command's --model.weights=source: the parsed configs are
    # checked in test_wandb_agent.py (same arguments as wandb's agent, which sorts parameters by name)
    if "--model.weights=source" in cmd:
        assert cmd.index("--model.weights=source") < cmd.index("${args}")


def test_digits_strategies_grid():
    cfg = load_sweep(REPO / "sweeps" / "digits_strategies.yaml")
    trials = plan_trials(cfg)
    assert len(trials) == 5 * 3 * 2 * 3
    assert {t["strategy"] for t in trials} == {"scratch", "linear_probe", "finetune", "lp_ft", "l2sp"}
    # the fair protocol: one budget (the protocol config) and the same lr grid for every strategy
    assert "configs/protocol/fewshot.yaml" in cfg["command"]
    grids = {s: sorted(t["model.lr"] for t in trials if t["strategy"] == s) for s in {t["strategy"] for t in trials}}
    assert len({tuple(g) for g in grids.values()}) == 1
    assert {t["data.target_shots"] for t in trials} == {5, 20}
    assert {t["seed_everything"] for t in trials} == {0, 1, 2}
    cmd = build_command(cfg, trials[0], Path("/x"), stage_cache=Path("/s"))
    assert cmd[:4] == ["/usr/bin/env", sys.executable, "-m", "lit_transfer"]
    assert cmd[-3:] == ["--run.stage_cache=/s", "--run.dir", "/x"]
    # parameters in wandb agent's order (by name), whatever the file's order
    assert [a.split("=")[0] for a in cmd if a.startswith(tuple(f"--{k}=" for k in trials[0]))] == [
        "--data.target_shots", "--model.lr", "--seed_everything", "--strategy"]


def test_lr_sweeps_sample_log_uniform_lr():
    for path in (REPO / "sweeps").glob("lr_*.yaml"):
        cfg = load_sweep(path)
        spec = cfg["_params"]["model.lr"]
        assert spec["distribution"] == "log_uniform_values"
        lrs = [t["model.lr"] for t in plan_trials(cfg)]
        assert all(spec["min"] <= lr <= spec["max"] for lr in lrs)
        strategy = path.stem[len("lr_"):]
        cmd = cfg["command"]
        # the strategy is fixed before ${args}: a strategy config setting model.lr cannot undo the sample
        assert cmd.index(f"--strategy={strategy}") < cmd.index("${args}")
        assert ("--model.weights=source" in cmd) == (strategy != "scratch")


def cheap_source_stage(tmp_path, monkeypatch) -> None:
    """The shipped configs with a 2-step source stage (target-run trainer flags never reach the stage); trials
    read them through ``--run.configs`` (:func:`tiny_sweep`)."""
    configs = tmp_path / "configs"
    shutil.copytree(REPO / "configs", configs)
    with open(configs / "strategy" / "source.yaml", "a") as fh:
        fh.write("trainer:\n  max_epochs: 1\n  limit_train_batches: 2\n  enable_progress_bar: false\n")


def tiny_sweep(tmp_path, parameters: dict) -> Path:
    cfg = yaml.safe_load((REPO / "sweeps" / "digits_strategies.yaml").read_text())
    cfg["command"][-1:] = ["--trainer.max_steps=4", "--trainer.val_check_interval=2",
                          "--trainer.enable_progress_bar=false", "${args}"]
    configs = tmp_path / "configs"
    if configs.is_dir():  # cheap_source_stage: the source stage reads strategy/source.yaml from there
        cfg["command"].insert(-1, f"--run.configs={configs}")
    cfg["parameters"] = parameters
    path = tmp_path / "e2e.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def test_results_are_identical_with_one_or_two_workers(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    cheap_source_stage(tmp_path, monkeypatch)
    path = tiny_sweep(tmp_path, {"strategy": {"values": ["scratch", "finetune"]}, "model.lr": {"values": [0.001, 0.01]},
                                 "data.target_shots": {"value": 3}, "seed_everything": {"values": [0, 1]}})
    runs = {}
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        assert sweep.main([str(path), "--out", str(out), "--workers", str(workers)]) == 0, capsys.readouterr().err
        runs[workers] = {p.parent.name: json.loads(p.read_text()) for p in (out / "trials").glob("*/result.json")}
        runs[workers]["stage"] = json.loads(next((out / "stages").glob("*/result.json")).read_text())
    assert sorted(runs[1]) == sorted(runs[2]) and len(runs[1]) == 9
    for trial, r in runs[1].items():
        assert r["metrics"] == runs[2][trial]["metrics"], trial  # bit-identical, not approximately
        assert r["env"]["threads"] == runs[2][trial]["env"]["threads"] == 1
        assert r.get("curve") == runs[2][trial].get("curve")


def test_real_cli_two_strategies_two_seeds(tmp_path, monkeypatch, capsys):
    """End to end: shared source stage trained once, scratch vs finetune, then the report."""
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("WANDB_MODE", "offline")
    cheap_source_stage(tmp_path, monkeypatch)
    path = tiny_sweep(tmp_path, {"strategy": {"values": ["scratch", "finetune"]}, "data.target_shots": {"value": 5},
                                 "seed_everything": {"values": [0, 1]}})
    out = tmp_path / "out"
    assert sweep.main([str(path), "--out", str(out), "--workers", "2"]) == 0, capsys.readouterr().err
    results = [json.loads(p.read_text()) for p in (out / "trials").glob("*/result.json")]
    assert sorted((r["strategy"], r["seed"]) for r in results) == [
        ("finetune", 0), ("finetune", 1), ("scratch", 0), ("scratch", 1)]
    assert all(r["weights"] is None for r in results if r["strategy"] == "scratch")
    stages = {(s := json.loads(p.read_text()))["seed"]: s for p in (out / "stages").glob("*/result.json")}
    assert sorted(stages) == [0, 1]  # one source model per seed: the intervals cover its variance
    for r in results:
        if r["strategy"] == "finetune":  # each seed's run loaded its own seed's stage, and waited for it
            assert r["weights"].startswith(stages[r["seed"]]["run_dir"]) and r["stage_wait_s"] > 0
    logs = "".join(p.read_text() for p in (out / "trials").glob("*/trial.log"))
    assert logs.count("training source stage once") == 2

    # resume: nothing to do
    assert sweep.main([str(path), "--out", str(out)]) == 0
    assert "4 ok (4 already done)" in capsys.readouterr().err

    assert report.main([str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| digits_shift | finetune | target val | small_cnn | source stage | 8x8 | 5 | 2 |" in printed
    assert "HTML report:" in printed
    summary = json.loads((out / "report" / "summary.json").read_text())
    ft = next(r for r in summary["rows"] if r["strategy"] == "finetune")
    assert ft["pairs"] == 2 and ft["split_mismatch"] == 0 and ft["forgetting"] is not None
    assert summary["stages"][0]["source_acc_mean"] > 0 and summary["stages"][0]["seeds"] == [0, 1]
    assert summary["stages"][0]["used_by"] == ["finetune"]


def test_shipped_sweep_runs_from_any_directory(tmp_path, monkeypatch, capsys):
    """`lit-transfer sweep sweeps/x.yaml` outside the repo: the shipped file, as for --config paths."""
    monkeypatch.chdir(tmp_path)
    assert sweep.main(["sweeps/lr_scratch.yaml", "--dry-run", "--out", str(tmp_path / "out")]) == 0
    captured = capsys.readouterr()
    assert captured.out.count("pending ") == 12 and "lr_scratch: 12 trials" in captured.err
    assert sweep.main(["sweeps/no_such_sweep.yaml", "--dry-run"]) == 2
    assert "sweep file not found: sweeps/no_such_sweep.yaml" in capsys.readouterr().err
