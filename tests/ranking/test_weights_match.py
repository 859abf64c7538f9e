"""A ranked candidate is matched to fine-tuning runs by what their weights are, not how the word was spelled."""

from pathlib import Path

import pytest

from lit_transfer.plan.weights import File, Hub, Random
from lit_transfer.ranking.compare import compare, matches
from lit_transfer.ranking.rank import parse_candidates


def _run(weights, backbone="resnet10t", acc=0.8, seed=0):
    return {"status": "ok", "strategy": "finetune", "seed": seed, "backbone": backbone, "weights": weights,
            "metrics": {"target/test_acc": acc}}


@pytest.mark.parametrize("word", ["hub", "imagenet", "pretrained", "Hub"])
def test_a_run_with_any_hub_word_matches_a_hub_candidate(word):
    candidate = {"backbone": "resnet10t", "weights": "pretrained"}
    assert matches(candidate, _run(word))
    assert matches({"backbone": "resnet10t", "weights": "hub"}, _run(word))
    assert not matches(candidate, _run(word, backbone="small_cnn"))  # another architecture is another model


def test_hub_random_and_files_never_match_each_other(tmp_path):
    ckpt = tmp_path / "a.ckpt"
    ckpt.write_bytes(b"x")
    hub, random, file = ({"backbone": "resnet10t", "weights": w} for w in ("pretrained", None, str(ckpt)))
    assert matches(random, _run(None)) and matches(random, _run("null"))
    assert not matches(hub, _run(None)) and not matches(random, _run("hub"))
    assert not matches(hub, _run(str(ckpt))) and not matches(file, _run("hub"))
    assert matches(file, _run(str(ckpt)))


def test_compare_pools_the_hub_runs_whatever_their_word():
    payload = {"metric": "logme", "candidates": [
        {"label": "hub", "backbone": "resnet10t", "weights": "pretrained", "scores": {"logme": 1.0}},
        {"label": "rand", "backbone": "resnet10t", "weights": None, "scores": {"logme": 0.0}}]}
    results = [_run("hub", acc=0.8, seed=0), _run("imagenet", acc=0.6, seed=1), _run(None, acc=0.5)]
    section = compare(payload, results)
    rows = {r["label"]: r for r in section["strategies"]["finetune"]["rows"]}
    assert rows["hub"]["n"] == 2 and rows["hub"]["acc_mean"] == pytest.approx(0.7)
    assert rows["rand"]["n"] == 1 and section["unmatched"] == []


def test_rank_candidates_carry_typed_weights(tmp_path):
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"x")
    hub, imagenet, random, scratch, file, bare = parse_candidates(
        ["small_cnn@hub", "resnet10t@imagenet", "small_cnn@random", "resnet18@scratch", f"tiny@{weights}", "resnet50"])
    assert hub.weights == Hub() and imagenet.weights == Hub() and bare.weights == Hub()
    assert hub.weights.config_value == "pretrained"  # what rank.json records for hub weights
    assert random.weights == Random() and scratch.weights == Random() and random.weights.config_value is None
    assert file.weights == File(Path(weights).resolve()) and file.label == "tiny / w.safetensors"
