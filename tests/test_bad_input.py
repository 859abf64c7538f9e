"""Bad input fails fast with a one-line TransferConfigError that names the problem and the fix."""

import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import timm
import torch

from lit_transfer.plan.command_line import expand_strategy
from lit_transfer.errors import TransferConfigError
from lit_transfer.models import Backbone
from lit_transfer.module import TransferClassifier
from lit_transfer.strategies import FinetuningSchedule

REPO = Path(__file__).resolve().parent.parent


def one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert msg and "\n" not in msg, msg
    return msg


def test_unknown_backbone_suggests_close_names():
    with pytest.raises(TransferConfigError) as err:
        Backbone("resnet181", in_chans=3)
    msg = one_line(err)
    assert "unknown backbone 'resnet181'" in msg
    assert "did you mean" in msg and "resnet18" in msg.split("did you mean", 1)[1]


def test_unknown_backbone_without_close_names_points_to_list_models():
    with pytest.raises(TransferConfigError) as err:
        Backbone("qqqqzzzz", in_chans=3)
    msg = one_line(err)
    assert "qqqqzzzz" in msg and "list_models" in msg


def test_unknown_backbone_through_module():
    with pytest.raises(TransferConfigError, match="resnet181"):
        TransferClassifier("resnet181", num_classes=3, in_chans=1)


def test_missing_weights_file(tmp_path):
    missing = tmp_path / "nope" / "weights.safetensors"
    with pytest.raises(TransferConfigError) as err:
        Backbone("small_cnn", in_chans=1, weights=str(missing))
    msg = one_line(err)
    assert "not found" in msg and str(missing) in msg and "pretrained" in msg


def test_weights_value_neither_file_nor_keyword():
    with pytest.raises(TransferConfigError) as err:
        Backbone("small_cnn", in_chans=1, weights="imagenet21k_please")
    msg = one_line(err)
    assert "imagenet21k_please" in msg and "pretrained" in msg and ".safetensors" in msg


def test_incompatible_weights_name_mismatching_keys(tmp_path):
    torch.save(timm.create_model("resnet18", num_classes=0).state_dict(), tmp_path / "r18.pth")
    with pytest.raises(TransferConfigError) as err:
        Backbone("small_cnn", in_chans=3, weights=str(tmp_path / "r18.pth"))
    msg = one_line(err)
    assert "do not fit backbone" in msg and "r18.pth" in msg
    assert "missing" in msg and ("stem.0.weight" in msg or "stages." in msg)
    assert "unexpected" in msg and ("bn1." in msg or "conv1." in msg or "layer1." in msg)


def test_hub_weights_offline_fail_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(TransferConfigError) as err:
        Backbone("resnet18.a1_in1k", in_chans=3, weights="pretrained")
    elapsed = time.monotonic() - start
    assert elapsed < 30
    msg = one_line(err)
    assert "resnet18.a1_in1k" in msg and "offline" in msg
    assert "--model.weights" in msg and ".safetensors" in msg


@pytest.mark.parametrize("keyword", ["pretrained", "hub", "IMAGENET"])
def test_hub_weights_for_model_without_hub_weights(keyword):
    with pytest.raises(TransferConfigError) as err:
        Backbone("small_cnn", in_chans=1, weights=keyword)
    msg = one_line(err)
    assert "small_cnn" in msg and "no hub weights" in msg and "model.weights" in msg


def test_schedule_freezing_more_groups_than_backbone_has():
    module = TransferClassifier("small_cnn", num_classes=4, in_chans=1)
    assert module.num_groups == 4
    schedule = FinetuningSchedule(phases=[{"epoch": 0, "frozen": 9}])
    with pytest.raises(TransferConfigError) as err:
        schedule.setup(SimpleNamespace(strategy=None), module, "fit")
    msg = one_line(err)
    assert "9" in msg and "4 layer groups" in msg


def test_schedule_frozen_limit_is_accepted_at_the_boundary():
    module = TransferClassifier("small_cnn", num_classes=4, in_chans=1)
    FinetuningSchedule(phases=[{"epoch": 0, "frozen": 4}, {"epoch": 1, "frozen": -4}]).setup(
        SimpleNamespace(strategy=None), module, "fit"
    )
    with pytest.raises(TransferConfigError, match="4 layer groups"):
        FinetuningSchedule(phases=[{"epoch": 0, "frozen": -5}]).setup(SimpleNamespace(strategy=None), module, "fit")


def test_unknown_strategy():
    with pytest.raises(TransferConfigError) as err:
        expand_strategy(["fit", "--strategy", "nope"])
    msg = one_line(err)
    assert "unknown strategy 'nope'" in msg and "finetune" in msg and "linear_probe" in msg
    with pytest.raises(TransferConfigError, match="nope"):
        expand_strategy(["fit", "--strategy=nope"])


def test_known_strategy_config_goes_first_wherever_the_flag_is():
    for argv in (["fit", "--strategy", "finetune", "--x", "1"], ["fit", "--x", "1", "--strategy=finetune"]):
        out = expand_strategy(argv)
        assert out[:2] == ["fit", "--config"] and out[2].endswith(os.path.join("strategy", "finetune.yaml"))
        assert out[3:] == argv[1:]  # the flag stays: --strategy is a real option, recorded in the config
    # no subcommand (TransferCLI(run=False)): first of all; a value that looks like a subcommand is no subcommand
    out = expand_strategy(["--run.experiment", "test", "--strategy=finetune"])
    assert out[0] == "--config" and out[2:] == ["--run.experiment", "test", "--strategy=finetune"]


# --- through the CLI -------------------------------------------------------------------------------------------


def run_cli(tmp_path, *extra):
    cmd = [
        sys.executable, "-m", "lit_transfer", "fit",
        "--config", "configs/data/digits_shift.yaml", "--config", "configs/model/small_cnn.yaml",
        *extra,
        "--trainer.fast_dev_run=true", "--run.root", str(tmp_path),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def assert_cli_user_error(proc, *words):
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("lit-transfer: error:"), last
    for word in words:
        assert word in last, last
    return last


@pytest.mark.slow
def test_cli_unknown_backbone(tmp_path):
    proc = run_cli(tmp_path, "--model.backbone=resnet181")
    assert_cli_user_error(proc, "unknown backbone 'resnet181'", "resnet18,")


@pytest.mark.slow
def test_cli_missing_weights_file(tmp_path):
    missing = tmp_path / "missing.safetensors"
    proc = run_cli(tmp_path, f"--model.weights={missing}")
    assert_cli_user_error(proc, "weights file not found", str(missing))


def test_channel_mismatch_that_cannot_be_adapted():
    # A first layer that is not a 4-D conv (a linear patch embedding) cannot be adapted like timm's
    # adapt_input_conv does: the error names the layer and the channel setting to use instead.
    from lit_transfer.models.weights import load_into

    model = torch.nn.Sequential()
    model.add_module("embed", torch.nn.Linear(1 * 16, 8))
    state = {"embed.weight": torch.zeros(8, 3), "embed.bias": torch.zeros(8)}
    with pytest.raises(TransferConfigError) as err:
        load_into(model, state, source="w.pth", first_conv="embed")
    msg = one_line(err)
    assert "cannot adapt" in msg and "embed" in msg and "3" in msg


# --- issue 10: no silently wrong result ----------------------------------------------------------------------
# Each case runs the real CLI (in this process: no 6 s import per case) and checks the three promises: the exit
# code, one `lit-transfer: error:` line naming the problem, and no result.json with "status": "ok".

import json  # noqa: E402

import lightning as L  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402
from PIL import Image  # noqa: E402

from lit_transfer.cli import main  # noqa: E402
from lit_transfer.data import DomainPairDataModule, DomainSpec  # noqa: E402
from lit_transfer.errors import DIVERGED_EXIT_CODE  # noqa: E402

CONFIGS = ["--config", str(REPO / "configs/data/digits_shift.yaml"),
           "--config", str(REPO / "configs/model/small_cnn.yaml")]
QUICK = ["--trainer.max_epochs=2", "--trainer.enable_progress_bar=false", "--data.target_shots=5"]


class StopAtTrainStart(L.Callback):
    """Asks Lightning to stop before the first step: a fit that trains nothing."""

    def on_train_start(self, trainer, pl_module):
        trainer.should_stop = True


def fit_in_process(capfd, root, *args, configs=CONFIGS):
    """``lit-transfer fit`` in this process: (exit code, stderr, every result.json under root)."""
    os.environ.pop("LIT_TRANSFER_RUN_DIR", None)
    code = 0
    try:
        main(["fit", *configs, *QUICK, f"--run.root={root}", *args])
    except SystemExit as exc:
        code = exc.code
    err = capfd.readouterr().err
    found = [json.loads(p.read_text()) for p in Path(root).rglob("result.json")]
    return code, err, found


def assert_one_line_error(code, err, found, *words, exit_code=2):
    assert code == exit_code, err[-2000:]
    assert "Traceback" not in err, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("lit-transfer: error: "), last
    assert sum(line.startswith("lit-transfer: error:") for line in err.splitlines()) == 1, err[-2000:]
    for word in words:
        assert word in last, last
    assert not any(r.get("status") == "ok" for r in found), found
    return last


def test_lr_nan_in_a_yaml_config(tmp_path, capfd):
    cfg = tmp_path / "lr.yaml"
    cfg.write_text("model:\n  lr: .nan\n")
    out = fit_in_process(capfd, tmp_path / "runs", "--config", str(cfg))
    assert_one_line_error(*out, "model.lr=nan", "finite number > 0")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.ckpt"))


def test_negative_lr(tmp_path, capfd):
    assert_one_line_error(*fit_in_process(capfd, tmp_path, "--model.lr=-0.001"), "model.lr=-0.001", "> 0")


def test_huge_lr_diverges_and_is_recorded_as_diverged(tmp_path, capfd):
    code, err, found = fit_in_process(capfd, tmp_path, "--model.lr=1e9")
    # The first epoch's one step leaves finite but huge weights: caught at its validation (NaN loss), or at
    # the next step's training loss.
    last = assert_one_line_error(code, err, found, "training diverged: non-finite", "model.lr",
                                 exit_code=DIVERGED_EXIT_CODE)
    assert len(found) == 1, found
    result = found[0]
    assert result["status"] == "diverged" and result["metrics"] == {} and result["checkpoint"] is None
    div = result["divergence"]
    assert div["what"] in ("loss", "val_loss") and div["loss"] in ("nan", "inf", "-inf") and div["step"] >= 1
    assert f"step {div['step']} " in last and result["error"] in last


@pytest.mark.parametrize("shots", ["0", "-3"])
def test_target_shots_below_one(tmp_path, capfd, shots):
    out = fit_in_process(capfd, tmp_path, f"--data.target_shots={shots}")
    assert_one_line_error(*out, f"data.target_shots={shots}", "integer >= 1", "null")


def test_batch_size_zero(tmp_path, capfd):
    assert_one_line_error(*fit_in_process(capfd, tmp_path, "--data.batch_size=0"), "data.batch_size=0", ">= 1")


def test_zero_epochs(tmp_path, capfd):
    out = fit_in_process(capfd, tmp_path, "--trainer.max_epochs=0")
    assert_one_line_error(*out, "trainer.max_epochs=0", ">= 1", "-1 (unlimited)")


def test_seed_out_of_range(tmp_path, capfd):
    out = fit_in_process(capfd, tmp_path, "--seed_everything=-1")
    assert_one_line_error(*out, "seed_everything=-1", "[0, 4294967295]")


def test_negative_weight_decay(tmp_path, capfd):
    out = fit_in_process(capfd, tmp_path, "--model.optimizer=torch.optim.AdamW",
                         "--model.optimizer.init_args.weight_decay=-0.1")
    assert_one_line_error(*out, "model.optimizer.init_args.weight_decay=-0.1", ">= 0")


def test_label_map_with_one_class(tmp_path, capfd):
    out = fit_in_process(capfd, tmp_path, '--data.target.label_map={"3": 0}')
    assert_one_line_error(*out, "data.target", "1 class", "at least 2")


def test_empty_train_split_after_sampling(tmp_path, capfd, monkeypatch):
    from lit_transfer.data import splits

    monkeypatch.setattr(splits, "take_shots", lambda idx, *a, **k: idx[:0])  # sampling kept nothing
    out = fit_in_process(capfd, tmp_path)
    assert_one_line_error(*out, "target train split is empty after sampling")


def test_zero_training_steps_is_an_error_not_a_result(tmp_path, capfd):
    out = fit_in_process(capfd, tmp_path, "--trainer.callbacks+=test_bad_input.StopAtTrainStart")
    assert_one_line_error(*out, "trained zero steps")
    assert out[2] == []


def write_image_folder(root, classes=("a", "b"), per_class=6):
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(np.full((8, 8), (7 * i + 100 * c) % 256, np.uint8)).save(root / name / f"{i}.png")


def image_folder_config(tmp_path, root, **spec):
    data = {"source": {"name": "image_folder", "root": str(root), "download": False, **spec},
            "target": {"name": "image_folder", "root": str(root), "download": False, **spec},
            "val_fraction": 0.25, "test_fraction": 0.25, "batch_size": 4}
    path = tmp_path / "folder.yaml"
    path.write_text(yaml.safe_dump({"data": data, "model": {"backbone": "small_cnn_tiny"}}))
    return ["--config", str(path)]


def corrupt_images(root):
    (root / "a" / "1.png").write_bytes(b"not a png")
    good = (root / "b" / "2.png").read_bytes()
    (root / "b" / "2.png").write_bytes(good[: len(good) // 2])  # truncated
    return [root / "a" / "1.png", root / "b" / "2.png"]


def test_image_folder_with_corrupt_files_lists_every_one(tmp_path, capfd):
    root = tmp_path / "images"
    write_image_folder(root)
    bad = corrupt_images(root)
    out = fit_in_process(capfd, tmp_path / "runs", "--data.target_shots=2",
                         configs=image_folder_config(tmp_path, root))
    last = assert_one_line_error(*out, "2 unreadable image file(s)", "skip_corrupt: true")
    for path in bad:
        assert str(path) in last


def test_image_folder_error_names_at_most_twenty_files(tmp_path):
    root = tmp_path / "images"
    write_image_folder(root, per_class=15)
    for path in sorted(root.rglob("*.png"))[:25]:
        path.write_bytes(b"junk")
    from lit_transfer.data.domains import load_domain

    with pytest.raises(TransferConfigError) as err:
        load_domain(DomainSpec(name="image_folder", root=str(root)), 0)
    msg = one_line(err)
    assert "25 unreadable image file(s)" in msg and "and 5 more" in msg and msg.count(".png (") == 20


def test_image_folder_skip_corrupt_trains_and_counts_skipped(tmp_path, capfd, caplog):
    root = tmp_path / "images"
    write_image_folder(root)
    corrupt_images(root)
    code, err, found = fit_in_process(capfd, tmp_path / "runs", "--data.target_shots=2",
                                      configs=image_folder_config(tmp_path, root, skip_corrupt=True))
    assert code == 0, err[-2000:]
    assert "skipped 2 unreadable file(s) (skip_corrupt: true)" in caplog.text and "1.png" in caplog.text
    assert len(found) == 1 and found[0]["status"] == "ok"
    assert found[0]["skipped_corrupt"] == {"source": 2, "target": 2}


def test_image_folder_with_one_class(tmp_path, capfd):
    root = tmp_path / "images"
    write_image_folder(root, classes=("only",))
    out = fit_in_process(capfd, tmp_path / "runs", configs=image_folder_config(tmp_path, root))
    assert_one_line_error(*out, "one class folder ('only')", "at least 2")


@pytest.mark.parametrize("kind", ["garbage", "pickled", "empty", "truncated"])
def test_unreadable_weights_name_the_file_and_never_advise_unsafe_loading(tmp_path, capfd, kind):
    path = tmp_path / f"{kind}.ckpt"
    if kind == "garbage":
        path.write_bytes(b"this is not a checkpoint\n" * 20)
    elif kind == "pickled":  # a Lightning-style checkpoint with a pickled object in its hyper-parameters
        torch.save({"state_dict": {"w": torch.zeros(1)}, "hyper_parameters": {"root": Path("/data")}}, path)
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        torch.save({"w": torch.zeros(100)}, path)
        path.write_bytes(path.read_bytes()[:200])
    code, err, found = fit_in_process(capfd, tmp_path / "runs", f"--model.weights={path}")
    last = assert_one_line_error(code, err, found, f"cannot read weights file {path}")
    expected = {"garbage": "not a PyTorch weights file", "pickled": "pickled Python objects (e.g. pathlib",
                "empty": "empty or truncated", "truncated": "corrupt or truncated"}[kind]
    assert expected in last
    assert "weights_only" not in err and "trust" not in err


# Every user-facing number of the data module and the model: one line naming the key, the value and the range.
@pytest.mark.parametrize("kwargs, words", [
    ({"target_shots": 0}, ["data.target_shots=0", "integer >= 1", "null"]),
    ({"source_shots": -1}, ["data.source_shots=-1", "integer >= 1"]),
    ({"target_shots": 2.5}, ["data.target_shots=2.5", "integer >= 1"]),
    ({"val_shots": 0}, ["data.val_shots=0", "integer >= 1"]),
    ({"batch_size": 0}, ["data.batch_size=0", ">= 1"]),
    ({"eval_batch_size": -2}, ["data.eval_batch_size=-2", ">= 1"]),
    ({"val_fraction": 0.0}, ["data.val_fraction=0.0", "(0, 1)"]),
    ({"test_fraction": 1.5}, ["data.test_fraction=1.5", "(0, 1)"]),
    ({"val_fraction": 0.6, "test_fraction": 0.5}, ["data.val_fraction + data.test_fraction = 1.1", "< 1"]),
    ({"split_seed": -1}, ["data.split_seed=-1", ">= 0"]),
    ({"target": DomainSpec(image_size=0)}, ["data.target.image_size=0", ">= 1"]),
])
def test_data_numbers_are_checked_when_configured(kwargs, words):
    with pytest.raises(TransferConfigError) as err:
        DomainPairDataModule(**kwargs)
    msg = one_line(err)
    assert "out of range" in msg
    for word in words:
        assert word in msg, msg


@pytest.mark.parametrize("kwargs, words", [
    ({"lr": float("nan")}, ["model.lr=nan", "finite number > 0"]),
    ({"lr": float("inf")}, ["model.lr=inf", "finite number > 0"]),
    ({"lr": 0.0}, ["model.lr=0.0", "> 0"]),
    ({"backbone_lr_scale": -0.5}, ["model.backbone_lr_scale=-0.5", ">= 0"]),
    ({"layer_decay": 1.5}, ["model.layer_decay=1.5", "(0, 1]"]),
    ({"layer_decay": 0.0}, ["model.layer_decay=0.0", "(0, 1]"]),
    ({"label_smoothing": 1.0}, ["model.label_smoothing=1.0", "[0, 1)"]),
])
def test_model_numbers_are_checked_when_configured(kwargs, words):
    with pytest.raises(TransferConfigError) as err:
        TransferClassifier("small_cnn_tiny", num_classes=3, in_chans=1, **kwargs)
    msg = one_line(err)
    for word in words:
        assert word in msg, msg


def test_valid_edge_values_are_accepted():
    DomainPairDataModule(target_shots=1, source_shots=None, val_shots=None, batch_size=1, eval_batch_size=1,
                         val_fraction=0.5, test_fraction=0.4, split_seed=0)
    TransferClassifier("small_cnn_tiny", num_classes=3, in_chans=1, lr=1e-8, backbone_lr_scale=0.0,
                       layer_decay=1.0, label_smoothing=0.0)
    from lit_transfer.validation import check_trainer

    check_trainer({"max_epochs": -1, "max_steps": -1, "limit_train_batches": 1.0, "limit_val_batches": 0})
    check_trainer({"max_epochs": None, "max_steps": 5, "limit_train_batches": 3, "fast_dev_run": True})
    check_trainer({"max_epochs": 2, "limit_train_batches": 2.0, "limit_val_batches": 0.0})  # "2" parses as 2.0


@pytest.mark.parametrize("trainer, words", [
    ({"max_steps": 0}, ["trainer.max_steps=0", "-1 (unlimited)"]),
    ({"limit_train_batches": 0}, ["trainer.limit_train_batches=0", "(0, 1]", "whole number of batches >= 1"]),
    ({"limit_train_batches": 1.5}, ["trainer.limit_train_batches=1.5", "(0, 1]"]),
    ({"limit_val_batches": -0.5}, ["trainer.limit_val_batches=-0.5", "(0, 1]"]),
    ({"accumulate_grad_batches": 0}, ["trainer.accumulate_grad_batches=0", ">= 1"]),
    ({"gradient_clip_val": float("nan")}, ["trainer.gradient_clip_val=nan", ">= 0"]),
    ({"fast_dev_run": -1}, ["trainer.fast_dev_run=-1", ">= 0"]),
])
def test_trainer_numbers_are_checked(trainer, words):
    from lit_transfer.validation import check_trainer

    with pytest.raises(TransferConfigError) as err:
        check_trainer({"max_epochs": 3, **trainer})
    msg = one_line(err)
    for word in words:
        assert word in msg, msg


@pytest.mark.slow
def test_sweep_with_a_diverging_trial_and_the_report_leaves_it_out(tmp_path, capsys):
    from lit_transfer import report, sweep

    # Three seeds of one setting; the third one's run diverges (its own config file sets a huge LR).
    trials = []
    for seed, extra in ((0, {}), (1, {}), (2, {"model": {"lr": 1e9}})):
        trials.append(str(tmp_path / f"seed{seed}.yaml"))
        Path(trials[-1]).write_text(yaml.safe_dump({"seed_everything": seed, **extra}))
    cfg = {"method": "grid", "metric": {"name": "target/val_acc", "goal": "maximize"},
           "command": ["${env}", "${interpreter}", "-m", "lit_transfer", "fit", *CONFIGS, *QUICK,
                       "--strategy=scratch", "${args}"],
           "parameters": {"config": {"values": trials}}}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "out"
    os.environ.pop("LIT_TRANSFER_RUN_DIR", None)
    assert sweep.main([str(path), "--out", str(out), "--workers", "1"]) == 1  # one trial failed
    summary = capsys.readouterr().err
    assert "2 ok (0 already done), 1 failed" in summary, summary
    infos = {d.name: json.loads((d / "trial.json").read_text()) for d in (out / "trials").iterdir()}
    diverged = [i for i in infos.values() if i["params"]["config"] == trials[2]]
    good = [i for i in infos.values() if i["params"]["config"] != trials[2]]
    assert [i["status"] for i in good] == ["ok", "ok"]
    assert len(diverged) == 1 and diverged[0]["status"] == "failed"
    assert diverged[0]["returncode"] == DIVERGED_EXIT_CODE
    assert diverged[0]["error"].startswith("diverged: training diverged: non-finite")
    assert f"  {diverged[0]['trial_id']}: diverged: training diverged" in summary  # the reason, in the summary
    assert sweep.trial_state(out / "trials" / diverged[0]["trial_id"]) == "failed"  # resume does not count it

    assert report.main([str(out)]) == 0
    rep = json.loads((out / "report" / "summary.json").read_text())
    (row,) = rep["rows"]
    accs = [json.loads((out / "trials" / i["trial_id"] / "result.json").read_text())["metrics"]["target/test_acc"]
            for i in good]
    assert row["n"] == 2 and row["acc_mean"] == pytest.approx(sum(accs) / 2)
    assert any(n.startswith("diverged run left out of the means:") and diverged[0]["trial_id"] in n
               and "training diverged: non-finite" in n for n in rep["notes"]), rep["notes"]
    assert "diverged run left out of the means" in capsys.readouterr().out  # listed in the printed report


@pytest.mark.slow
def test_cli_diverged_run_real_process(tmp_path):
    # Two steps: the first one's loss is finite (the weights it starts from are), the second one's is not.
    cmd = [sys.executable, "-m", "lit_transfer", "fit", *CONFIGS, "--model.lr=1e9", "--data.batch_size=16",
           "--trainer.fast_dev_run=2", "--run.root", str(tmp_path)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == DIVERGED_EXIT_CODE, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("lit-transfer: error: training diverged: non-finite loss (nan) at step 2"), last
    (result,) = [json.loads(p.read_text()) for p in tmp_path.rglob("result.json")]
    assert result["status"] == "diverged" and result["divergence"]["step"] == 2


def test_divergence_guard_non_finite_weights_at_train_end():
    from lit_transfer.divergence import DivergenceGuard
    from lit_transfer.errors import TrainingDiverged

    module = TransferClassifier("small_cnn_tiny", num_classes=3, in_chans=1)
    trainer = SimpleNamespace(world_size=1, global_step=7, current_epoch=1)
    guard = DivergenceGuard()
    guard.on_train_end(trainer, module)  # finite weights: nothing happens
    with torch.no_grad():
        module.head.fc.weight[0, 0] = float("inf")  # e.g. a last step with non-finite gradients
    with pytest.raises(TrainingDiverged) as err:
        guard.on_train_end(trainer, module)
    assert err.value.what == "weights" and err.value.names and err.value.names[0].startswith("head.")
    assert "non-finite weights after step 7" in str(err.value) and "\n" not in str(err.value)
    assert err.value.record()["loss"] is None


def test_divergence_guard_stops_at_the_first_non_finite_loss():
    from lit_transfer.divergence import DivergenceGuard
    from lit_transfer.errors import TrainingDiverged

    # Not a logging step: the guard only records on the device; it reads the record at check points.
    trainer = SimpleNamespace(world_size=1, global_step=3, current_epoch=0,
                              _logger_connector=SimpleNamespace(should_update_logs=False))
    guard = DivergenceGuard()
    guard.on_train_batch_end(trainer, None, {"loss": torch.tensor(2.3)}, None, 0)
    guard.on_train_batch_end(trainer, None, None, None, 1)  # a skipped step returns nothing
    guard.on_train_epoch_end(trainer, None)  # all finite so far
    trainer.global_step = 4
    guard.on_train_batch_end(trainer, None, {"loss": torch.tensor(float("inf"))}, None, 2)
    trainer.global_step = 5
    guard.on_train_batch_end(trainer, None, {"loss": torch.tensor(float("nan"))}, None, 3)  # not the first
    trainer._logger_connector.should_update_logs = True  # a logging step: a check point
    trainer.global_step = 6
    with pytest.raises(TrainingDiverged) as err:
        guard.on_train_batch_end(trainer, None, {"loss": torch.tensor(1.0)}, None, 4)
    assert err.value.step == 4 and err.value.record() == {
        "step": 4, "epoch": 0, "what": "loss", "loss": "inf", "params": []}


@pytest.mark.slow
def test_cli_bad_number_real_process(tmp_path):
    proc = run_cli(tmp_path, "--data.batch_size=0")
    assert_cli_user_error(proc, "data.batch_size=0 is out of range: must be an integer >= 1")
    assert not list(tmp_path.rglob("result.json"))


def test_one_step_to_huge_finite_weights_is_caught_by_the_validation_loss(tmp_path, capfd):
    # One step at lr=1e9: its loss was finite and the weights after it are finite, but so large that the
    # logits overflow: validation loss NaN. Before the guard this wrote an "ok" result at chance accuracy.
    code, err, found = fit_in_process(capfd, tmp_path, "--model.lr=1e9", "--trainer.fast_dev_run=true")
    assert_one_line_error(code, err, found, "non-finite validation loss (nan", "val_loss", "after step 1",
                          exit_code=DIVERGED_EXIT_CODE)
    (result,) = found
    assert result["status"] == "diverged" and result["divergence"]["what"] == "val_loss"
    assert "val_loss" in result["divergence"]["params"]


# --- issue 20: your own data --------------------------------------------------------------------------------


def write_classes(root, classes, per_class=6, size=8, mode="L", ext="png"):
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            value = (40 * c + 3 * i) % 256
            array = np.full((size, size) if mode == "L" else (size, size, 3), value, np.uint8)
            Image.fromarray(array, mode).save(root / name / f"{i}.{ext}")


def pair_config(tmp_path, source_root, target_root, source=None, target=None):
    data = {"source": {"name": "image_folder", "root": str(source_root), "download": False, **(source or {})},
            "target": {"name": "image_folder", "root": str(target_root), "download": False, **(target or {})},
            "val_fraction": 0.25, "test_fraction": 0.25, "batch_size": 4}
    path = tmp_path / "pair.yaml"
    path.write_text(yaml.safe_dump({"data": data, "model": {"backbone": "small_cnn_tiny"}}))
    return ["--config", str(path)]


def test_renamed_target_classes_are_one_line_then_label_map_fixes_it(tmp_path, capfd):
    write_classes(tmp_path / "src", ["0", "1", "2"])
    write_classes(tmp_path / "tgt", ["zero", "one", "two"])
    out = fit_in_process(capfd, tmp_path / "runs", "--data.target_shots=2",
                         configs=pair_config(tmp_path, tmp_path / "src", tmp_path / "tgt"))
    assert_one_line_error(*out, "['0', '1', '2']", "['one', 'two', 'zero']", "share no name", "label_map")
    renames = {"zero": "0", "one": "1", "two": "2"}
    code, err, found = fit_in_process(capfd, tmp_path / "runs", "--data.target_shots=2", configs=pair_config(
        tmp_path, tmp_path / "src", tmp_path / "tgt", target={"label_map": renames}))
    assert code == 0, err[-2000:]
    assert found[0]["classes"] == {"names": ["0", "1", "2"], "missing": {}}


def test_target_without_a_class_is_tested_on_the_classes_it_has(tmp_path, capfd):
    write_classes(tmp_path / "src", ["a", "b", "c"])
    write_classes(tmp_path / "tgt", ["a", "b"])
    code, err, found = fit_in_process(capfd, tmp_path / "runs", "--data.target_shots=2",
                                      configs=pair_config(tmp_path, tmp_path / "src", tmp_path / "tgt"))
    assert code == 0, err[-2000:]
    assert "data.target has 2 of the 3 classes (no images of ['c'])" in err
    (result,) = found
    assert "target/test_acc" in result["metrics"] and "source/test_acc" in result["metrics"]
    assert result["classes"] == {"names": ["a", "b", "c"], "missing": {"target": ["c"]}}


def test_empty_class_folder_through_the_cli(tmp_path, capfd):
    write_classes(tmp_path / "src", ["a", "b", "c"])
    (tmp_path / "src" / "b0").mkdir()
    out = fit_in_process(capfd, tmp_path / "runs", "--data.target_shots=2",
                         configs=pair_config(tmp_path, tmp_path / "src", tmp_path / "src"))
    assert_one_line_error(*out, "class folder(s) ['b0']", "have no images")


def test_mixed_modes_are_converted_and_counted_and_sizes_must_agree(tmp_path, capfd):
    write_classes(tmp_path / "src", ["a", "b"], size=8)
    write_classes(tmp_path / "tgt", ["a", "b"], size=8)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8), "RGB").save(tmp_path / "tgt" / "a" / "0.png")
    code, err, found = fit_in_process(capfd, tmp_path / "runs", "--data.target_shots=2",
                                      configs=pair_config(tmp_path, tmp_path / "src", tmp_path / "tgt"))
    assert code == 0, err[-2000:]
    assert found[0]["converted_mode"] == {"source": 0, "target": 1}
    write_classes(tmp_path / "big", ["a", "b"], size=28)
    out = fit_in_process(capfd, tmp_path / "runs2", "--data.target_shots=2",
                         configs=pair_config(tmp_path, tmp_path / "src", tmp_path / "big"))
    assert_one_line_error(*out, "8x8", "28x28", "data.source.image_size=28 and data.target.image_size=28")


# --- issue 20, defect 8: unknown and prefix keys ------------------------------------------------------------


@pytest.mark.parametrize("args, words", [
    (["--data.target_shot", "5"], "unknown option --data.target_shot on the command line; did you mean "
                                  "--data.target_shots?"),  # a prefix is not a key
    (["--data.target.image_sise=28"], "did you mean --data.target.image_size?"),
    (["--modle.lr=0.1"], "did you mean --model.lr?"),
    # the feature cache's settings moved from the model to the callback's own section (issue 23)
    (["--model.feature_cache=false"], "did you mean --feature_cache.enabled?"),
    (["--model.feature_cache_mb=64"], "did you mean --feature_cache.memory_mb?"),
])
def test_unknown_or_prefix_key_on_the_command_line(tmp_path, capfd, args, words):
    out = fit_in_process(capfd, tmp_path / "runs", *args)
    assert_one_line_error(*out, words)
    assert not (tmp_path / "runs").exists()


def test_misspelled_key_in_a_config_file(tmp_path, capfd):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  target:\n    name: digits\n    image_sise: 28\n")
    out = fit_in_process(capfd, tmp_path / "runs", "--config", str(bad))
    assert_one_line_error(*out, f"unknown key data.target.image_sise in {bad}; did you mean data.target.image_size?")


def test_keys_below_class_options_are_left_to_their_class(tmp_path, capfd):
    code, err, found = fit_in_process(capfd, tmp_path / "runs", "--model.head.init_args.dropout=0.1",
                                      "--trainer.callbacks+=lightning.pytorch.callbacks.LearningRateMonitor",
                                      "--trainer.callbacks.logging_interval=step",
                                      "--model.optimizer=torch.optim.SGD", "--model.optimizer.init_args.momentum=0.5")
    assert code == 0, err[-2000:]
    assert found and found[0]["status"] == "ok"
