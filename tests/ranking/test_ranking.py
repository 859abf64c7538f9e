"""Transferability scores against hand computations, the `rank` command, and the rank section of reports."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from lit_transfer.ranking import scores


# ------------------------------------------------------------------------------------------------ LogME
F_TOY = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, -1.0], [-1.0, 0.5], [0.5, 2.0]])
W_TOY = np.array([1.5, -0.5])
NOISE = np.array([0.1, -0.2, 0.05, 0.15, -0.1, 0.0])
Y_TOY = F_TOY @ W_TOY + NOISE


def _direct_log_marginal(f, y, alpha, beta):
    """y ~ N(0, I/beta + F F^T / alpha): the evidence by definition, per sample."""
    cov = np.eye(len(y)) / beta + f @ f.T / alpha
    return multivariate_normal(mean=np.zeros(len(y)), cov=cov).logpdf(y) / len(y)


@pytest.mark.parametrize("alpha,beta", [(1.0, 1.0), (0.3, 20.0), (5.0, 0.5)])
def test_logme_evidence_is_the_gaussian_marginal_likelihood(alpha, beta):
    assert scores.logme_evidence(F_TOY, Y_TOY, alpha, beta) == pytest.approx(
        _direct_log_marginal(F_TOY, Y_TOY, alpha, beta), rel=1e-10)


def test_logme_on_a_toy_regression_maximises_the_evidence():
    score, [(alpha, beta)] = scores.logme(F_TOY, Y_TOY[:, None], return_params=True)
    # The returned score is the evidence at the returned hyper-parameters ...
    assert score == pytest.approx(_direct_log_marginal(F_TOY, Y_TOY, alpha, beta), rel=1e-8)
    # ... which is a maximum: no point of a log-grid around it is higher, and the gradient vanishes.
    for da in np.linspace(-2, 2, 9):
        for db in np.linspace(-2, 2, 9):
            assert _direct_log_marginal(F_TOY, Y_TOY, alpha * math.exp(da), beta * math.exp(db)) <= score + 1e-9
    h = 1e-4
    d_alpha = (scores.logme_evidence(F_TOY, Y_TOY, alpha * math.exp(h), beta)
               - scores.logme_evidence(F_TOY, Y_TOY, alpha * math.exp(-h), beta)) / (2 * h)
    d_beta = (scores.logme_evidence(F_TOY, Y_TOY, alpha, beta * math.exp(h))
              - scores.logme_evidence(F_TOY, Y_TOY, alpha, beta * math.exp(-h))) / (2 * h)
    assert abs(d_alpha) < 1e-5 and abs(d_beta) < 1e-5
    # The noise precision found is of the order of the true one (residual variance ~0.015 -> beta ~ 50-200).
    assert 10 < beta < 1000


def test_logme_with_more_dimensions_than_samples():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(5, 9))  # D > N: F^T F has 4 zero eigenvalues, which the evidence must count
    y = rng.normal(size=5)
    score, [(alpha, beta)] = scores.logme(f, y[:, None], return_params=True)
    assert score == pytest.approx(_direct_log_marginal(f, y, alpha, beta), rel=1e-8)


def test_logme_classification_is_the_mean_over_one_hot_columns():
    rng = np.random.default_rng(1)
    labels = np.array([0, 0, 1, 1, 2, 2, 0, 1, 2, 2])
    f = rng.normal(size=(10, 3)) + labels[:, None]
    per_class = [scores.logme(f, (labels == c).astype(float)[:, None]) for c in range(3)]
    assert scores.logme(f, labels) == pytest.approx(np.mean(per_class), rel=1e-12)


def test_logme_prefers_features_that_predict_the_labels():
    rng = np.random.default_rng(2)
    labels = np.repeat(np.arange(4), 10)
    informative = np.eye(4)[labels] * 3 + rng.normal(scale=0.3, size=(40, 4))
    noise = rng.normal(size=(40, 4))
    assert scores.logme(informative, labels) > scores.logme(noise, labels) + 0.1


# ------------------------------------------------------------------------------------------------- LEEP
THETA = np.array([[0.8, 0.2], [0.6, 0.4], [0.3, 0.7], [0.1, 0.9]])
Y4 = np.array([0, 0, 1, 1])


def test_leep_on_a_hand_made_joint_distribution():
    # P(y, z) = 1/4 [[0.8 + 0.6, 0.2 + 0.4], [0.3 + 0.1, 0.7 + 0.9]] = [[.35, .15], [.10, .40]]
    assert scores.joint_distribution(THETA, Y4) == pytest.approx(np.array([[0.35, 0.15], [0.10, 0.40]]))
    # P(z) = (.45, .55): P(y|z=0) = (7/9, 2/9), P(y|z=1) = (3/11, 8/11). Expected empirical predictions:
    # x1: .8*7/9 + .2*3/11 = 67/99, x2: .6*7/9 + .4*3/11 = 57/99, x3: .3*2/9 + .7*8/11 = 57/99, x4: 67/99.
    expected = (2 * math.log(67 / 99) + 2 * math.log(57 / 99)) / 4
    assert scores.leep(THETA, Y4) == pytest.approx(expected, rel=1e-12)


def test_leep_bounds():
    # A source model whose classes are the target's: LEEP = 0; an uninformative one: the log class prior.
    assert scores.leep(np.eye(2)[Y4], Y4) == pytest.approx(0.0, abs=1e-12)
    assert scores.leep(np.full((4, 3), 1 / 3), Y4) == pytest.approx(math.log(0.5))


# -------------------------------------------------------------------------------------------------- NCE
def test_nce_on_hand_made_labels():
    z = np.array([0, 0, 1, 1, 1, 2])
    y = np.array([0, 0, 1, 1, 0, 1])
    # H(Y|Z) = P(z=0) * 0 + P(z=1) * H(1/3, 2/3) + P(z=2) * 0
    h = 0.5 * -(1 / 3 * math.log(1 / 3) + 2 / 3 * math.log(2 / 3))
    assert scores.nce(z, y) == pytest.approx(-h, rel=1e-12)
    assert scores.nce(y, y) == 0.0  # target labels are a function of the source labels
    assert scores.nce(np.zeros(6, int), y) == pytest.approx(-math.log(2))  # Z says nothing: -H(Y)
    assert scores.nce(np.array([5, 5, 9, 9, 9, 7]), y) == pytest.approx(-h)  # label values do not matter


# ------------------------------------------------------------------------------------------------ H-score
def test_hscore_by_hand():
    f = np.array([[0.0], [2.0], [4.0], [6.0]])
    # var(f) = (9 + 1 + 1 + 9) / 4 = 5, class means 1 and 5: var(g) = (4 * 4) / 4 = 4 -> H = 4 / 5
    assert scores.hscore(f, Y4, shrinkage=None) == pytest.approx(0.8)
    # 2-d, shrinkage a = 0.5 fixed: (1 - a) cov_f + a mu I with mu = tr(cov_f) / 2
    f2 = np.array([[0.0, 1.0], [2.0, 0.0], [4.0, 3.0], [6.0, 2.0]])
    c = f2 - f2.mean(0)
    g = np.array([c[:2].mean(0)] * 2 + [c[2:].mean(0)] * 2)
    cov_f, cov_g = c.T @ c / 4, g.T @ g / 4
    shrunk = 0.5 * cov_f + 0.5 * np.trace(cov_f) / 2 * np.eye(2)
    assert scores.hscore(f2, Y4, shrinkage=0.5) == pytest.approx(np.trace(np.linalg.inv(shrunk) @ (0.5 * cov_g)))


def test_raw_hscore_saturates_when_features_span_the_samples():
    # Why `hscore` shrinks by default: with D >= N - 1 any features score C - 1.
    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(3), 4)
    f = rng.normal(size=(12, 20))
    assert scores.hscore(f, labels, shrinkage=None) == pytest.approx(2.0, rel=1e-6)
    informative = np.concatenate([np.eye(3)[labels] * 5, f[:, :17]], 1)
    assert scores.hscore(informative, labels) > scores.hscore(f, labels) + 0.5


def test_gmm_pseudo_source_labels_follow_clusters():
    rng = np.random.default_rng(4)
    labels = np.repeat(np.arange(3), 20)
    f = np.eye(3)[labels] * 8 + rng.normal(size=(60, 3))
    probs = scores.gmm_source_probs(f, 3)
    assert probs.shape == (60, 3) and np.allclose(probs.sum(1), 1)
    assert scores.nce(probs.argmax(1), labels) == pytest.approx(0.0, abs=1e-9)  # clusters = classes
    assert scores.leep(probs, labels) > -0.05


# ------------------------------------------------------------------------------------------- rank command
def _fake_source_run(run_dir, seed: int, shifts: list) -> "Path":
    """A lit_transfer source run on disk: checkpoint (small_cnn_tiny + 10-class head), config.yaml, result.json."""
    import torch
    import yaml

    from lit_transfer.module import TransferClassifier

    torch.manual_seed(seed)
    model = TransferClassifier(backbone="small_cnn_tiny", num_classes=10, in_chans=1)
    ckpt = run_dir / "checkpoints" / "best.ckpt"
    ckpt.parent.mkdir(parents=True)
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": {"backbone": "small_cnn_tiny", "in_chans": 1}},
               ckpt)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(
        {"run": {"strategy": "source"}, "data": {"train_on": "source", "source": {"name": "digits", "shifts": shifts}}}))
    (run_dir / "result.json").write_text(json.dumps({"status": "ok", "strategy": "source", "checkpoint": str(ckpt)}))
    return ckpt


def test_rank_command_scores_and_sorts_candidates(tmp_path, capsys):
    from lit_transfer.entry import main

    stages = tmp_path / "stages"
    a = _fake_source_run(stages / "a", 0, [])
    b = _fake_source_run(stages / "b", 1, [{"name": "rotate", "degrees": 45}])
    out = tmp_path / "rank.json"
    with pytest.raises(SystemExit) as exit_:
        main(["rank", "--config", "configs/data/digits_shift.yaml", "--candidates", str(stages),
              "small_cnn_tiny@random", "--metric", "leep", "--shots", "3", "--shots-seeds", "0", "1",
              "--out", str(out), "--device", "cpu"])
    assert exit_.value.code == 0
    payload = json.loads(out.read_text())
    assert payload["metric"] == "leep" and payload["target"]["examples"] == 30
    assert payload["target"]["shots_seeds"] == [0, 1]
    rows = payload["candidates"]
    assert [r["rank"] for r in rows] == [1, 2, 3]
    leeps = [r["scores"]["leep"] for r in rows]
    assert leeps == sorted(leeps, reverse=True)
    by_weights = {r["weights"]: r for r in rows}
    # Directory candidates: the checkpoint each run's result.json reports; their source heads give LEEP/NCE.
    assert by_weights[str(a.resolve())]["source_labels"] == "head"
    assert by_weights[str(b.resolve())]["label"] == "small_cnn_tiny / digits[rotate45]"
    assert by_weights[None]["source_labels"] == "gmm" and by_weights[None]["label"] == "small_cnn_tiny (random init)"
    for r in rows:
        assert set(r["scores"]) == {"logme", "leep", "nce", "hscore", "hscore_raw"}
        assert len(r["scores_per_draw"]) == 2
        assert r["scores"]["logme"] == pytest.approx(np.mean([d["logme"] for d in r["scores_per_draw"]]))
        assert sorted(r["ranks"]) == sorted(r["scores"])
    printed = capsys.readouterr().out
    assert "| 1 |" in printed and "3 candidates" in printed


def test_rank_command_errors_are_one_line(tmp_path, capsys):
    from lit_transfer.ranking.rank import main

    assert main(["--config", "configs/data/digits_shift.yaml", "--candidates", str(tmp_path),
                 "--out", str(tmp_path / "r.json")]) == 2
    assert "no run directory with checkpoints" in capsys.readouterr().err
    assert main(["--config", "configs/data/digits_shift.yaml", "--candidates", "not_a_model_xyz@random",
                 "--out", str(tmp_path / "r.json")]) == 2
    assert "unknown backbone" in capsys.readouterr().err
    assert main(["--config", "configs/data/digits_shift.yaml", "--candidates", "small_cnn",
                 "--out", str(tmp_path / "r.json")]) == 2  # a bare name means hub weights; small_cnn has none
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "candidate 'small_cnn'" in err and "small_cnn@random" in err
    assert not (tmp_path / "r.json").exists()


# ------------------------------------------------------------------------------------- rank vs accuracy
def _results(weights_acc: dict) -> list[dict]:
    out = []
    for (backbone, weights), accs in weights_acc.items():
        for seed, acc in enumerate(accs):
            out.append({"status": "ok", "strategy": "finetune", "seed": seed, "backbone": backbone,
                        "weights": weights, "metrics": {"target/test_acc": acc}})
    return out


def test_compare_matches_runs_and_computes_tau_and_r(tmp_path):
    from lit_transfer.ranking import compare

    run = tmp_path / "stages" / "s1"
    (run / "checkpoints").mkdir(parents=True)
    ckpt = run / "checkpoints" / "best.ckpt"
    ckpt.write_bytes(b"x")
    (run / "checkpoints" / "last.ckpt").hardlink_to(ckpt)
    payload = {"metric": "logme", "candidates": [
        {"label": "A", "backbone": "small_cnn", "weights": str(ckpt), "source": {"run_dir": str(run)},
         "scores": {"logme": 3.0, "leep": -1.0, "nce": -1.0, "hscore": 1.0}},
        {"label": "B", "backbone": "small_cnn", "weights": None,
         "scores": {"logme": 2.0, "leep": -0.5, "nce": -2.0, "hscore": 3.0}},
        {"label": "C", "backbone": "resnet10t", "weights": "pretrained",
         "scores": {"logme": 1.0, "leep": -2.0, "nce": -3.0, "hscore": 2.0}},
        {"label": "D", "backbone": "resnet10t", "weights": None,
         "scores": {"logme": 0.0, "leep": -3.0, "nce": -4.0, "hscore": 0.0}},
    ]}
    results = _results({("small_cnn", str(run / "checkpoints" / "last.ckpt")): [0.9, 0.8],  # hard link: A
                        ("small_cnn", None): [0.7, 0.7], ("resnet10t", "pretrained"): [0.8, 0.8]})
    results.append({"status": "ok", "strategy": "source", "backbone": "small_cnn", "weights": None,
                    "metrics": {"target/test_acc": 0.1}})  # source stages are not fine-tuning results
    section = compare.compare(payload, results)
    assert section["unmatched"] == ["D"]
    part = section["strategies"]["finetune"]
    assert [r["label"] for r in part["rows"]] == ["A", "B", "C"]
    assert [r["acc_mean"] for r in part["rows"]] == pytest.approx([0.85, 0.7, 0.8])
    assert [r["measured_rank"] for r in part["rows"]] == [1, 3, 2]
    # logme orders A > B > C, accuracy A > C > B: one discordant pair of three -> tau = (2 - 1) / 3.
    c = part["correlations"]["logme"]
    assert c["kendall_tau"] == pytest.approx(1 / 3)
    x, y = np.array([3.0, 2.0, 1.0]), np.array([0.85, 0.7, 0.8])
    assert c["pearson_r"] == pytest.approx(np.corrcoef(x, y)[0, 1])
    assert c["top1_acc"] == pytest.approx(0.85) and c["regret"] == pytest.approx(0.0)
    # hscore orders B > C > A: all three pairs discordant (tau = -1), and its top-1 (B) loses 15 pp.
    assert part["correlations"]["hscore"]["kendall_tau"] == pytest.approx(-1.0)
    assert part["correlations"]["hscore"]["regret"] == pytest.approx(0.15)
    text = compare.markdown(section)
    assert "Kendall τ" in text and "| hscore | -1.00 |" in text and "D" in text.splitlines()[-1]


def test_report_shows_the_ranking_when_rank_json_is_present(tmp_path, capsys):
    from lit_transfer.report import main

    root = tmp_path / "sweep"
    payload = {"metric": "logme", "candidates": []}
    for i, (name, score, accs) in enumerate([("a", 2.0, [0.9, 0.88]), ("b", 1.0, [0.6, 0.62]),
                                             ("c", 0.0, [0.5, 0.4])]):
        payload["candidates"].append({"label": name, "backbone": "small_cnn", "weights": f"/w/{name}.ckpt",
                                      "scores": {"logme": score, "leep": -score, "nce": score, "hscore": score}})
        for seed, acc in enumerate(accs):
            d = root / "trials" / f"{name}{seed}"
            d.mkdir(parents=True)
            (d / "result.json").write_text(json.dumps({
                "status": "ok", "experiment": "e", "strategy": "finetune", "seed": seed, "target_shots": 10,
                "backbone": "small_cnn", "weights": f"/w/{name}.ckpt", "split_hash": str(seed),
                "metrics": {"target/test_acc": acc}}))
    (root / "rank.json").write_text(json.dumps(payload))
    assert main([str(root)]) == 0
    printed = capsys.readouterr().out
    assert "Transferability ranking vs fine-tuned accuracy" in printed
    assert "| logme (ranked by) | +1.00 |" in printed and "| leep | -1.00 |" in printed
    report = root / "report"
    assert "Kendall τ" in (report / "report.md").read_text()
    assert "rank_vs_accuracy_finetune.png" in (report / "report.md").read_text()
    assert (report / "rank_vs_accuracy_finetune.png").stat().st_size > 1000
    assert "Transferability ranking" in (report / "report.html").read_text()
    section = json.loads((report / "rank_vs_accuracy.json").read_text())
    assert section["strategies"]["finetune"]["correlations"]["logme"]["pearson_r"] > 0.9


def test_rank_benchmark_sweep_builds_one_source_stage_per_candidate():
    from pathlib import Path

    from lit_transfer.plan.command_line import expand_strategy
    from lit_transfer.plan.command_line import CommandLine
    from lit_transfer.source_stage import source_stage_args
    from lit_transfer.sweep import build_command, load_sweep, plan_trials

    cfg = load_sweep(Path(__file__).resolve().parents[2] / "sweeps" / "rank_digits.yaml")
    trials = plan_trials(cfg)
    assert len(trials) == 6 * 3 * 3
    candidates = {(json.dumps(t["data.source.shifts"]), t["model.backbone"]) for t in trials}
    assert len(candidates) == 18
    stage_args = set()
    for t in trials:
        cmd = build_command(cfg, t, Path("/x"))
        argv = expand_strategy(cmd[cmd.index("fit") + 1:])
        stage = source_stage_args(CommandLine.parse(argv), 0)
        assert not any("finetune" in a for a in stage) and "--seed_everything=0" in stage
        stage_args.add(tuple(stage))
    # Seeds share a stage; every (source shifts, backbone) candidate gets its own.
    assert len(stage_args) == 18
