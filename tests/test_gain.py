"""One pairing rule for the gain over scratch: the report's table and the W&B summaries agree."""

import pytest

from lit_transfer import gain, report, tracking


def _r(strategy, acc, seed=0, shots=5, split="a", experiment="e"):
    return {"status": "ok", "experiment": experiment, "strategy": strategy, "seed": seed, "target_shots": shots,
            "split_hash": split, "metrics": {"target/test_acc": acc}, "convergence": {"still_improving": False}}


def test_gain_pairs_on_experiment_seed_shots_and_split():
    run = _r("finetune", 0.80)
    assert gain.transfer_gain(run, _r("scratch", 0.70)) == pytest.approx(0.10)
    for other in (_r("scratch", 0.1, seed=1), _r("scratch", 0.1, shots=20), _r("scratch", 0.1, split="b"),
                  _r("scratch", 0.1, experiment="other")):
        assert gain.transfer_gain(run, other) is None
    # several paired baselines (repeats) are averaged; unpaired ones in the list are ignored
    baselines = [_r("scratch", 0.70), _r("scratch", 0.60), _r("scratch", 0.0, seed=3)]
    assert gain.transfer_gain(run, baselines) == pytest.approx(0.15)
    assert gain.transfer_gain(run, []) is None and gain.transfer_gain(run, None) is None
    assert gain.transfer_gain({**run, "metrics": {}}, baselines) is None


def test_report_and_wandb_compute_the_same_gains():
    scratch = [_r("scratch", 0.50, seed=0), _r("scratch", 0.55, seed=1), _r("scratch", 0.60, seed=2)]
    ft = [_r("finetune", 0.62, seed=0), _r("finetune", 0.70, seed=1), _r("finetune", 0.71, seed=2),
          _r("finetune", 0.90, seed=2, split="other")]  # same seed, other labelled examples: not paired
    row = next(r for r in report.summarise(scratch + ft, tune=False)["rows"] if r["strategy"] == "finetune")
    per_run = [tracking.transfer_gain(r, scratch) for r in ft]
    assert per_run[3] is None and row["split_mismatch"] == 1
    paired = [g for g in per_run if g is not None]
    assert row["pairs"] == 3 and row["gain_mean"] == pytest.approx(sum(paired) / 3)
    assert paired == pytest.approx([0.12, 0.15, 0.11])
