"""The label-free selection score is not an accuracy: under ``model.selection: entropy|snd|dev`` it is logged and
stored as ``target/val_score`` (checkpoints, curve, result.json, the report's tuning), never as ``val_acc``; and
result.json files written before it had its own name (score under ``val_acc``) are still read."""

from __future__ import annotations

import json
import os

import pytest
import torch

from conftest import REPO
from lit_transfer import gain, report
from lit_transfer.cli import main
from lit_transfer.evaluation import SCORE, selection_metric
from lit_transfer.results import upgrade

DA = ["--config", str(REPO / "configs/data/digits_to_digits_m.yaml"), "--config",
      str(REPO / "configs/model/small_cnn.yaml"), "--protocol=null", "--trainer.max_epochs=3",
      "--trainer.limit_train_batches=2", "--trainer.enable_progress_bar=false"]


def fit(run_dir, *args) -> dict:
    os.environ.pop("LIT_TRANSFER_RUN_DIR", None)
    main(["fit", *DA, f"--run.dir={run_dir}", *args])
    return json.loads((run_dir / "result.json").read_text())


def test_selection_metric_names():
    assert [selection_metric(s) for s in ("entropy", "snd", "dev")] == [SCORE] * 3 == ["target/val_score"] * 3
    assert [selection_metric(s) for s in ("auto", "source_val", "oracle")] == ["val_acc"] * 3


def test_label_free_selection_stores_target_val_score_not_val_acc(tmp_path):
    run = tmp_path / "run"
    r = fit(run, "--strategy=dann")  # the data config's selection: entropy
    assert r["selection"] == "entropy"
    m = r["metrics"]
    assert "val_acc" not in m and "val_acc_best" not in m
    assert m[SCORE] == pytest.approx(m["target/val_im_score"])  # the last validation's IM score
    assert m[f"{SCORE}_best"] == pytest.approx(max(r["curve"][SCORE]), abs=1e-5)  # checkpoints followed it
    assert "val_acc" not in r["curve"] and len(r["curve"][SCORE]) == len(r["curve"]["target/val_acc"]) == 3
    best = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)
    (state,) = [v for k, v in best["callbacks"].items() if k.startswith("Checkpoint")]
    assert state["monitor"] == SCORE and float(state["best_model_score"]) == pytest.approx(m[f"{SCORE}_best"])
    assert "monitor: target/val_score" in (run / "config.yaml").read_text()


def test_a_labelled_selection_keeps_val_acc(tmp_path):
    r = fit(tmp_path / "run", "--strategy=dann", "--model.selection=source_val")
    m = r["metrics"]
    assert SCORE not in m and f"{SCORE}_best" not in m
    assert m["val_acc"] == m["source/val_acc"] and 0.0 <= m["val_acc_best"] <= 1.0
    assert "val_acc" in r["curve"]


def _write(root, name, result) -> None:
    d = root / name
    d.mkdir(parents=True)
    (d / "result.json").write_text(json.dumps(result))


def _old(seed, lr, score, test, selection="entropy") -> dict:
    """A result.json as written before target/val_score: the selection score under val_acc(_best)."""
    return {"schema": 1, "status": "ok", "experiment": "e", "strategy": "dann", "seed": seed, "target_shots": None,
            "train_on": "source", "selection": selection, "lr": lr, "split_hash": f"s{seed}",
            "metrics": {"target/test_acc": test, "val_acc": score - 0.01, "val_acc_best": score},
            "curve": {"step": [1, 2], "val_acc": [score - 0.01, score], "target/val_acc": [0.5, 0.6]},
            "convergence": {"metric": "val_acc", "still_improving": False}}


def test_old_label_free_results_are_read_as_target_val_score(tmp_path):
    r = upgrade(_old(0, 0.01, 1.5, 0.7))
    assert r["metrics"] == {"target/test_acc": 0.7, SCORE: pytest.approx(1.49), f"{SCORE}_best": 1.5}
    assert list(r["curve"]) == ["step", SCORE, "target/val_acc"] and r["convergence"]["metric"] == SCORE
    assert upgrade(json.loads(json.dumps(r))) == r  # read twice: the same
    labelled = _old(0, 0.01, 0.9, 0.7, selection="auto")
    assert upgrade(json.loads(json.dumps(labelled))) == labelled  # val_acc there is an accuracy: kept

    _write(tmp_path, "a", _old(0, 0.01, 1.5, 0.7))
    _write(tmp_path, "b", _old(0, 0.001, 1.9, 0.2))  # its score is best: tuning picks it, whatever its test acc
    results, _ = report.collect(tmp_path)
    assert all(SCORE in r["metrics"] and "val_acc" not in r["metrics"] for r in results)
    tuned, notes = report.select_tuned(results)
    assert [r["lr"] for r in tuned] == [0.001] and "best target/val_score" in notes[0]
    assert SCORE in gain.load_result(tmp_path / "a" / "result.json")["metrics"]


def test_tuning_reads_the_new_score_and_old_val_acc_alike(tmp_path):
    new = _old(0, 0.1, 0.0, 0.9)
    new["metrics"] = {"target/test_acc": 0.9, SCORE: 2.0, f"{SCORE}_best": 2.1}
    _write(tmp_path, "new", new)
    _write(tmp_path, "old", _old(0, 0.2, 2.0, 0.1))  # an old file of the same cell: best score 2.0 < 2.1
    tuned, _ = report.select_tuned(report.collect(tmp_path)[0])
    assert [r["lr"] for r in tuned] == [0.1]
