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

from lit_transfer.cli import expand_strategy
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
        expand_strategy(["--strategy", "nope"])
    msg = one_line(err)
    assert "unknown strategy 'nope'" in msg and "finetune" in msg and "linear_probe" in msg
    with pytest.raises(TransferConfigError, match="nope"):
        expand_strategy(["--strategy=nope"])


def test_known_strategy_expands_to_its_config():
    out = expand_strategy(["fit", "--strategy", "finetune", "--x", "1"])
    assert out[:2] == ["fit", "--config"] and out[2].endswith(os.path.join("strategy", "finetune.yaml"))
    assert out[3:] == ["--x", "1"]


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
