"""Convergence is checked from the validation curve, not assumed: hand-made curves and a real run's record."""

import json
import subprocess
from pathlib import Path

import pytest

import lit_transfer
from conftest import REPO
from lit_transfer.cli import main
from lit_transfer.convergence import DRIFT, ValidationCurve, prediction_drift, still_improving


@pytest.mark.parametrize("curve, expected", [
    ([0.2, 0.5, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95], True),  # still rising in its last quarter
    ([0.2, 0.6, 0.8, 0.81, 0.80, 0.81, 0.80, 0.81], False),  # plateau
    ([0.2, 0.6, 0.8, 0.8, 0.8, 0.8, 0.815, 0.80], False),  # one lucky point is not progress: means, not maxima
    ([0.5, 0.6, 0.7, 0.9], True),  # 4 points: last 2 vs the 2 before
    ([0.5, 0.6, 0.7], None),  # too short to tell
    ([0.5, 0.6, float("nan"), 0.7], True),  # non-finite: never "converged"
])
def test_still_improving_on_hand_made_curves(curve, expected):
    assert still_improving(curve) is expected


def test_tolerance_and_tail_are_respected():
    flat_then_up = [0.5] * 6 + [0.515, 0.515]
    assert still_improving(flat_then_up, tol=0.01) is True
    assert still_improving(flat_then_up, tol=0.02) is False
    # a longer tail averages the rise with flat points: (0.5 + 0.5 + 0.515 + 0.515) / 4 - 0.5 < 0.01
    assert still_improving(flat_then_up, tail=0.5) is False


def test_curve_survives_resume_through_state_dict():
    a = ValidationCurve()
    a.curve["step"] += [10, 20]
    a.curve["val_acc"] += [0.1, 0.2]
    a.curve["target/val_acc"] += [0.1, 0.2]
    b = ValidationCurve()
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    assert b.curve == a.curve and b.summary()["convergence"]["best_step"] == 20


def test_prediction_drift_reads_quarter_modes_not_single_flips():
    jitter = [[0, 1, 2, 3], [0, 1, 2, 4], [0, 1, 2, 3], [0, 1, 2, 4]] * 2 + [[0, 1, 2, 3]] * 2
    # image 3 flips every validation between 3 and 4, but its most frequent class is 3 in both quarters
    assert prediction_drift(jitter) == 0.0
    drifting = [[0, 0, 0, 0]] * 4 + [[0, 0, 1, 1]] * 2 + [[0, 1, 1, 1]] * 2
    # quarters = last 2 vs the 2 before: modes [0, 0, 1, 1] and [0, 1, 1, 1] -> 1 of 4 images moved
    assert prediction_drift(drifting) == pytest.approx(0.25)
    assert prediction_drift(drifting[:3]) is None  # too short to tell


def test_label_free_runs_converge_on_prediction_drift_not_on_their_rising_score():
    curve = ValidationCurve(monitor="target/val_score")
    curve.label_free = True
    curve.curve["step"] += list(range(1, 9))
    curve.curve["target/val_score"] += [0.1, 0.3, 0.5, 0.7, 0.9, 1.1, 1.3, 1.5]  # the entropy score rises by construction
    curve.curve["target/val_acc"] += [0.5] * 8
    curve.predictions = [[0, 1, 2, 3], [0, 1, 2, 4]] * 4  # jitter only
    conv = curve.summary()["convergence"]
    assert conv["metric"] == DRIFT and conv["drift"] == 0.0 and conv["still_improving"] is False
    curve.predictions = [[0] * 50] * 6 + [[1] * 50] * 2  # every prediction moved between the last two quarters
    assert curve.summary()["convergence"]["still_improving"] is True
    restored = ValidationCurve()
    restored.load_state_dict(json.loads(json.dumps(curve.state_dict())))
    assert restored.predictions == curve.predictions and restored.label_free
    curve.label_free = False  # selected on a labelled metric: the rising curve is progress
    assert curve.summary()["convergence"]["still_improving"] is True


def test_fit_records_curve_convergence_labels_and_environment(tmp_path):
    args = ["fit", "--config", str(REPO / "configs/data/digits_shift.yaml"),
            "--config", str(REPO / "configs/model/small_cnn.yaml"), "--strategy=scratch",
            "--data.target_shots=3", "--trainer.max_epochs=-1", "--trainer.max_steps=8",
            "--trainer.check_val_every_n_epoch=null", "--trainer.val_check_interval=2",
            "--trainer.enable_progress_bar=false", "--run.threads=1", f"--run.dir={tmp_path / 'run'}"]
    main(args)
    r = json.loads((tmp_path / "run" / "result.json").read_text())
    assert r["steps"] == 8
    assert r["curve"]["step"] == [2, 4, 6, 8]  # every validation, in optimizer steps
    assert r["curve"]["val_acc"] == r["curve"]["target/val_acc"]
    conv = r["convergence"]
    assert conv["points"] == 4 and conv["last_step"] == 8
    assert conv["still_improving"] is still_improving(r["curve"]["val_acc"])
    assert r["curve"]["val_acc"][r["curve"]["step"].index(conv["best_step"])] == max(r["curve"]["val_acc"])
    # 3 shots x 10 classes trained on, 3 val labels per class chose the checkpoint: 60 labels in all
    assert r["labels"] == {"target_train": 30, "target_val": 30, "total": 60}
    assert r["env"]["threads"] == 1 and r["env"]["torch"] and r["env"]["lightning"] and r["env"]["device"]
    # the code behind the numbers: this checkout's commit (editable install), as `git rev-parse HEAD` says
    head = subprocess.run(["git", "-C", str(Path(lit_transfer.__file__).parent), "rev-parse", "HEAD"],
                          capture_output=True, text=True).stdout.strip()
    assert r["env"]["lit_transfer"] == lit_transfer.__version__ and r["env"]["git_commit"] == (head or None)
    assert r["shots_seed"] == r["seed"] == 0 and r["val_shots"] == "auto"


def test_tolerance_is_at_least_one_validation_example():
    from lit_transfer.convergence import ValidationCurve

    curve = ValidationCurve()
    # the last 2 points are 1.5 pp above the 2 before: less than one image of a 50-image val set (2 pp)
    curve.curve = {"step": [10, 20, 30, 40], "val_acc": [0.50, 0.50, 0.515, 0.515], "target/val_acc": [None] * 4}
    curve.val_size = 50
    small = curve.summary()["convergence"]
    assert small["still_improving"] is False and small["tol"] == 0.02
    curve.val_size = 400  # 0.25 pp per image: the same rise is progress
    assert curve.summary()["convergence"]["still_improving"] is True
    restored = ValidationCurve()
    restored.load_state_dict(curve.state_dict())
    assert restored.val_size == 400
