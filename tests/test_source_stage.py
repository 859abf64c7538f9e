"""The shared source stage: its key covers what defines the source model and nothing of the target run."""

import json
import os

import pytest

from conftest import REPO
from lit_transfer.cli import TransferCLI
from lit_transfer.plan.command_line import CommandLine
from lit_transfer.source_stage import source_stage_args, stage_key, stage_checkpoint

BASE = ["--config", str(REPO / "configs/data/digits_shift.yaml"), "--config", str(REPO / "configs/model/small_cnn.yaml")]
STRATEGY = ["--config", str(REPO / "configs/strategy/finetune.yaml")]
PROTOCOL = ["--config", str(REPO / "configs/protocol/fewshot.yaml")]


@pytest.fixture(scope="module")
def parser(tmp_path_factory):
    os.environ.pop("LIT_TRANSFER_RUN_DIR", None)
    cli = TransferCLI(args=[*BASE, f"--run.dir={tmp_path_factory.mktemp('p') / 'run'}"], run=False)
    return cli.parser


def key(parser, argv, source_seed=0, threads=1):
    """The stage key of a target run, as resolve_source_stage derives it (data from the parsed config)."""
    data = parser.parse_args(argv).data.as_dict()
    return stage_key(parser, source_stage_args(CommandLine.parse(argv), source_seed=source_seed, threads=threads, data=data)[1:])


def test_target_only_settings_never_reach_the_source_stage(parser):
    base = key(parser, [*BASE, *STRATEGY])
    target_only = [
        [*PROTOCOL],  # the target's budget and validation protocol
        ["--trainer.max_steps=200"], ["--trainer.max_epochs", "99"], ["--trainer.val_check_interval=5"],
        ["--trainer.check_val_every_n_epoch=null"], ["--trainer.logger=false"], ["--trainer.limit_train_batches=2"],
        ["--data.target_shots=5"], ["--data.val_shots=3"], ["--data.shots_seed=4"],
        ["--model.lr=0.1"], ["--seed_everything=7"], ["--run.source_seed=0"],
        ["--config", str(REPO / "configs/strategy/linear_probe.yaml")],
    ]
    for extra in target_only:
        assert key(parser, [*BASE, *STRATEGY, *extra]) == base, extra


def test_source_defining_settings_change_the_key(parser):
    base = key(parser, [*BASE, *STRATEGY])
    for extra in (["--data.batch_size=32"], ["--data.split_seed=1"], ["--model.backbone=small_cnn_tiny"],
                  ["--trainer.precision=bf16-mixed"], ["--trainer.deterministic=true"]):
        assert key(parser, [*BASE, *STRATEGY, *extra]) != base, extra
    assert key(parser, [*BASE, *STRATEGY], source_seed=1) != base  # the source seed
    assert key(parser, [*BASE, *STRATEGY], threads=2) != base  # thread count: other float sums


def test_targets_load_the_checkpoint_the_stage_was_tested_with(tmp_path):
    stage = tmp_path / "stage"
    (stage / "checkpoints").mkdir(parents=True)
    assert stage_checkpoint(stage) is None  # no result yet: train it
    best, last = stage / "checkpoints" / "best.ckpt", stage / "checkpoints" / "last.ckpt"
    best.write_bytes(b"b")
    last.write_bytes(b"l")
    (stage / "result.json").write_text(json.dumps({"status": "ok", "checkpoint": str(best)}))
    assert stage_checkpoint(stage) == best
    (stage / "result.json").write_text(json.dumps({"status": "diverged", "checkpoint": str(best)}))
    assert stage_checkpoint(stage) is None


def test_where_stages_and_configs_live_never_changes_a_key_or_a_config_hash(parser, tmp_path):
    from lit_transfer.results import config_hash

    base = key(parser, [*BASE, *STRATEGY])
    for extra in (["--run.stage_cache=/somewhere/else"], [f"--run.configs={REPO / 'configs'}"],
                  ["--strategy=finetune"], ["--strategy", "linear_probe"]):
        assert key(parser, [*BASE, *STRATEGY, *extra]) == base, extra
    a = parser.parse_args([*BASE, "--run.stage_cache=/a", f"--run.root={tmp_path}"])
    b = parser.parse_args([*BASE, "--run.stage_cache=/b", f"--run.configs={REPO / 'configs'}"])
    assert config_hash(parser, a) == config_hash(parser, b)


def test_a_finished_stage_is_reused_from_the_cache_the_config_names(parser, tmp_path):
    from lit_transfer.source_stage import resolve_source_stage

    argv = [*BASE, "--strategy=finetune", "--model.weights=source"]
    cfg = parser.parse_args([*argv, f"--run.stage_cache={tmp_path / 'cache'}", "--run.threads=1",
                             "--run.experiment=exp"])
    stage = tmp_path / "cache" / f"exp-source-{key(parser, argv)}"
    (stage / "checkpoints").mkdir(parents=True)
    ckpt = stage / "checkpoints" / "best.ckpt"
    ckpt.write_bytes(b"x")
    (stage / "result.json").write_text(json.dumps({"status": "ok", "checkpoint": str(ckpt)}))
    assert resolve_source_stage(CommandLine.parse(argv), parser, cfg) == ckpt  # found there: nothing trained


def test_the_stage_never_inherits_the_target_strategy(tmp_path):
    experiment = tmp_path / "experiment.yaml"
    experiment.write_text("strategy: finetune\n")
    args = source_stage_args(CommandLine.parse([*BASE, "--config", str(experiment), "--strategy", "lp_ft"]), 0)
    assert "lp_ft" not in " ".join(args) and args[-1].startswith("--strategy=")
    assert args[-1].endswith(os.path.join("strategy", "source.yaml"))  # last: it wins over experiment.yaml's


# --- issue 20, defect 7: the stage's data is the parsed config's ---------------------------------------------


def stage_cfg(parser, argv):
    """The source stage's parsed config, derived as resolve_source_stage derives it from a target run."""
    cfg = parser.parse_args(argv)
    args = source_stage_args(CommandLine.parse(argv), 0, 1, data=cfg.data.as_dict())
    return parser.parse_args(args[1:]), args


def test_stage_data_comes_from_the_parsed_config_with_target_only_settings_neutral(parser, tmp_path):
    data_yaml = tmp_path / "data.yaml"
    data_yaml.write_text("data:\n  target_shots: 50\n  val_shots: 7\n  batch_size: 16\n")
    argv = [*BASE, "--config", str(data_yaml), *STRATEGY, "--data.target_shots=1", "--data.split_seed=3"]
    stage, _ = stage_cfg(parser, argv)
    assert stage.data.train_on == "source" and stage.data.target_shots is None and stage.data.val_shots is None
    assert stage.data.split_seed == 3 and stage.data.batch_size == 16  # command line and YAML alike
    assert stage.model.weights is None and stage.run.strategy == "source"
    # every shots setting shares one stage
    assert key(parser, argv) == key(parser, [*argv, "--data.target_shots=20", "--data.val_shots=2"])


def test_a_rare_target_class_runs_with_target_shots_from_the_command_line(tmp_path, capfd):
    """The target's class 'b' has 4 images (2 to train on); the YAML says target_shots: 5. The command line's
    --data.target_shots=1 must be enough: the source stage never fails on target shots it does not use."""
    import numpy as np
    import yaml
    from PIL import Image

    from lit_transfer.cli import main

    for role, counts in (("src", {"a": 12, "b": 12}), ("tgt", {"a": 12, "b": 4})):
        for name, n in counts.items():
            (tmp_path / role / name).mkdir(parents=True)
            for i in range(n):
                value = 30 + 150 * (name == "b") + i
                Image.fromarray(np.full((8, 8), value, np.uint8), "L").save(tmp_path / role / name / f"{i}.png")
    spec = {"name": "image_folder", "download": False}
    config = tmp_path / "own.yaml"
    config.write_text(yaml.safe_dump({
        "run": {"experiment": "rare"},
        "data": {"source": {**spec, "root": str(tmp_path / "src")}, "target": {**spec, "root": str(tmp_path / "tgt")},
                 "target_shots": 5, "val_fraction": 0.25, "test_fraction": 0.25, "batch_size": 4},
        "model": {"backbone": "small_cnn_tiny"}}))
    os.environ.pop("LIT_TRANSFER_RUN_DIR", None)
    main(["fit", "--config", str(config), "--strategy=finetune", "--model.weights=source",
          "--data.target_shots=1", "--trainer.max_epochs=1", "--trainer.enable_progress_bar=false",
          f"--run.stage_cache={tmp_path / 'stages'}", f"--run.dir={tmp_path / 'run'}"])
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["status"] == "ok" and result["target_shots"] == 1
    (stage,) = [p for p in (tmp_path / "stages").iterdir() if p.is_dir()]
    assert json.loads((stage / "result.json").read_text())["target_shots"] is None


# --- issue 20, defect 9: one source model per seed -----------------------------------------------------------
def test_each_seed_trains_its_own_source_stage_unless_the_source_seed_is_set(parser):
    from lit_transfer.plan.run import source_seed

    argv = [*BASE, *STRATEGY, "--model.weights=source"]
    seeds = {s: source_seed(parser.parse_args([*argv, f"--seed_everything={s}"])) for s in (0, 1, 2)}
    assert seeds == {0: 0, 1: 1, 2: 2}
    assert len({key(parser, argv, source_seed=s) for s in seeds.values()}) == 3  # three source models
    shared = [source_seed(parser.parse_args([*argv, f"--seed_everything={s}", "--run.source_seed=5"])) for s in (0, 1)]
    assert shared == [5, 5]  # an explicit source seed shares one stage across seeds
