"""The stability rule for runs that never settle (domain adaptation), on hand-made curves."""

import json

import pytest

from lit_transfer import report
from lit_transfer.claims import STABLE_RULE, stable_gain
from lit_transfer.convergence import DRIFT

BASE = [[0.50, 0.52, 0.55, 0.56, 0.55, 0.57, 0.56, 0.58], [0.48, 0.50, 0.53, 0.52, 0.54, 0.53, 0.55, 0.54],
        [0.51, 0.53, 0.52, 0.55, 0.56, 0.55, 0.57, 0.56]]


def shifted(curves, *gains_per_point):
    return [[v + g for v, g in zip(c, gains)] for c, gains in zip(curves, gains_per_point)]


def test_a_gain_above_zero_at_every_final_point_is_claimed():
    # DANN-like: the curves keep moving (never converged), but each seed is 6-9 pp above its baseline throughout
    runs = shifted(BASE, [0.0] * 4 + [0.08, 0.06, 0.09, 0.07], [0.0] * 4 + [0.07, 0.08, 0.06, 0.08],
                   [0.0] * 4 + [0.09, 0.07, 0.08, 0.06])
    g = stable_gain(runs, BASE)
    assert g.points == 2 and g.n == 3  # the final quarter of 8 evaluations
    assert g.means == pytest.approx([0.23 / 3, 0.07]) and g.claimed and not g.negative and g.reason is None
    assert all(lo > 0 for lo in g.lows)


def test_a_gain_that_flips_sign_in_the_final_part_is_not_claimed():
    runs = shifted(BASE, [0.1] * 6 + [0.05, -0.06], [0.1] * 6 + [0.06, -0.05], [0.1] * 6 + [0.04, -0.07])
    g = stable_gain(runs, BASE)
    assert not g.claimed and g.reason == "the paired gain flips sign within the final 2 evaluations (-6.0 to +5.0 pp)"


def test_a_gain_whose_interval_touches_zero_at_one_point_is_not_claimed():
    runs = shifted(BASE, [0.0] * 6 + [0.08, 0.10], [0.0] * 6 + [0.07, -0.01], [0.0] * 6 + [0.09, 0.02])
    g = stable_gain(runs, BASE)
    assert g.means[1] > 0 and g.lows[1] <= 0 < g.lows[0]
    assert not g.claimed and g.reason == "the paired gain's interval includes 0 at 1 of the final 2 evaluations"


def test_negative_transfer_below_zero_at_every_final_point():
    runs = shifted(BASE, [-0.1] * 8, [-0.12] * 8, [-0.09] * 8)
    g = stable_gain(runs, BASE)
    assert g.claimed and g.negative


def test_too_few_pairs_or_points_claim_nothing():
    assert not stable_gain(BASE[:1], BASE[:1]).claimed  # one seed: no interval
    short = [[0.5, 0.6, 0.7]] * 3
    g = stable_gain(short, short)
    assert g.points == 0 and "≥ 2 paired seeds with ≥ 4 evaluations" in g.reason
    with pytest.raises(ValueError, match="one pair per seed"):
        stable_gain(BASE, BASE[:2])


def _da_result(tmp_path, name, strategy, seed, curve, acc):
    d = tmp_path / "runs" / name
    d.mkdir(parents=True)
    r = {"schema": 1, "status": "ok", "experiment": "uci_to_mnist", "strategy": strategy, "seed": seed,
         "target_shots": None, "train_on": "source", "unlabeled_target": True, "selection": "entropy",
         "metrics": {"target/test_acc": acc}, "config_hash": "c", "split_hash": f"s{seed}", "run_dir": str(d),
         "curve": {"step": list(range(len(curve))), "val_score": curve, "target/val_acc": curve},
         "convergence": {"metric": DRIFT, "drift": 0.1, "still_improving": True}}
    (d / "result.json").write_text(json.dumps(r))


def test_report_claims_a_da_gain_that_holds_over_the_final_part_and_says_which_rule(tmp_path):
    for seed, base in enumerate(BASE):
        _da_result(tmp_path, f"so{seed}", "source_only", seed, base, base[-1])
        dann = [v + 0.07 + 0.01 * seed for v in base]
        _da_result(tmp_path, f"dann{seed}", "dann", seed, dann, dann[-1])
        flip = [v + (0.05 if i % 2 else -0.05) for i, v in enumerate(base)]
        _da_result(tmp_path, f"mcc{seed}", "mcc", seed, flip, flip[-1])
    summary = report.summarise(report.collect(tmp_path / "runs")[0], baseline="source_only")
    rows = {r["strategy"]: r for r in summary["rows"]}
    assert rows["dann"]["gain_claimed"] and rows["dann"]["claim_rule"] == STABLE_RULE
    assert rows["dann"]["gain_mean"] == pytest.approx(0.08)
    assert not rows["mcc"]["gain_claimed"]
    notes = " ".join(summary["notes"])
    assert "uci_to_mnist/dann/shots=None: claimable by the rule for runs selected without target labels" in notes
    assert "uci_to_mnist/mcc/shots=None: no gain or negative transfer is claimed because the paired gain flips sign" in notes
    assert "(not claimed)" not in next(line for line in report.markdown(summary).splitlines() if "| dann |" in line)


def test_da_report_draws_no_labels_per_class_plot_and_warns_nothing(tmp_path):
    """A DA report (no row has labels per class) draws the gain plot only: no empty accuracy-vs-shots figure and
    no matplotlib 'no artists' warning on the console."""
    import warnings

    for seed, base in enumerate(BASE):
        _da_result(tmp_path, f"so{seed}", "source_only", seed, base, base[-1])
        dann = [v + 0.07 + 0.01 * seed for v in base]
        _da_result(tmp_path, f"dann{seed}", "dann", seed, dann, dann[-1])
    summary = report.summarise(report.collect(tmp_path / "runs")[0], baseline="source_only")
    (tmp_path / "out").mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        paths = report.plots(summary, tmp_path / "out")
    names = sorted(p.name for p in paths)
    assert "gain_over_source_only_uci_to_mnist.png" in names and not any(n.startswith("accuracy_vs_shots") for n in names)
