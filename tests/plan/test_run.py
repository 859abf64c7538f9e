"""The run plan: run dir, seeds and the weights decided once from the parsed config."""

from __future__ import annotations

import os

import pytest

from conftest import REPO
from lit_transfer.plan.command_line import read_command_line
from lit_transfer.plan.run import make_plan
from lit_transfer.plan.weights import Hub, Random, SourceStage

BASE = ["--config", str(REPO / "configs/data/digits_shift.yaml"),
        "--config", str(REPO / "configs/model/small_cnn.yaml")]


@pytest.fixture()
def parse(tmp_path, monkeypatch):
    from lit_transfer.cli import TransferCLI

    monkeypatch.delenv("LIT_TRANSFER_RUN_DIR", raising=False)
    parser = TransferCLI(args=[*BASE, f"--run.dir={tmp_path / 'p'}"], run=False).fit_parser

    def plan(*extra):
        args, command = read_command_line(["fit", *BASE, f"--run.root={tmp_path / 'runs'}", *extra])
        cfg = parser.parse_args(args[1:])
        return make_plan(cfg, command, "fit"), cfg
    return plan


def test_a_plan_names_its_run_dir_seeds_and_weights(parse, tmp_path):
    plan, cfg = parse("--seed_everything=3", "--model.weights=hub")
    assert plan.run_dir.is_dir() and plan.run_dir.parent.parent.parent == tmp_path / "runs"
    assert plan.weights == Hub("hub") and plan.seed == 3 and plan.source_seed == 3 and cfg.data.shots_seed == 3
    assert os.environ["LIT_TRANSFER_RUN_DIR"] == str(plan.run_dir)


def test_the_scratch_strategy_trains_from_random_init_whatever_the_weights(parse, capsys):
    plan, cfg = parse("--strategy=scratch", "--model.weights=pretrained")
    assert plan.weights == Random() and cfg.model.weights is None and not plan.from_source_stage
    assert "has no effect" in capsys.readouterr().err
    plan, _ = parse("--strategy=finetune", "--model.weights=source")
    assert plan.weights == SourceStage() and plan.from_source_stage
