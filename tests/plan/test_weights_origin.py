"""``model.weights`` parsed once into a typed value."""

from __future__ import annotations

from pathlib import Path

import pytest

from lit_transfer.plan.weights import File, Hub, Random, SourceStage, parse_weights


@pytest.mark.parametrize("given", [None, "null", "None", "", "random"])
def test_no_weights_is_random_init(given):
    assert parse_weights(given) == Random() and parse_weights(given).config_value is None


@pytest.mark.parametrize("word", ["pretrained", "hub", "imagenet", "Pretrained"])
def test_every_hub_word_is_the_hub_and_they_compare_equal_as_a_kind(word):
    parsed = parse_weights(word)
    assert isinstance(parsed, Hub) and parsed.word == word.lower()


def test_source_and_files():
    assert parse_weights("source") == SourceStage()
    ckpt = parse_weights("runs/x/checkpoints/best.ckpt")
    assert ckpt == File(Path("runs/x/checkpoints/best.ckpt")) and ckpt.is_checkpoint
    assert not parse_weights(Path("w.safetensors")).is_checkpoint
    assert parse_weights(ckpt) is ckpt  # a parsed value passes through


def test_a_file_keeps_its_path_as_its_config_value(tmp_path):
    path = tmp_path / "w.pth"
    assert parse_weights(str(path)).config_value == str(path) and str(parse_weights(str(path))) == str(path)
