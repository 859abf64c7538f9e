"""The model's composition: param groups from a pure function, callbacks it brings, its size budget."""

from __future__ import annotations

import ast

import pytest
import torch

from conftest import REPO, make_dm, make_module, make_trainer
from lit_transfer.callbacks import FeatureCaching, ForgettingMeter
from lit_transfer.param_groups import HEAD, param_groups


def test_param_groups_exist_for_frozen_weights_too_and_cover_every_trainable_parameter():
    module = make_module(lr=0.1, layer_decay=0.5, bottleneck=16)
    module.set_frozen(module.num_groups)  # nothing in the backbone trains now
    groups = param_groups(module, lr=0.1, backbone_lr_scale=1.0, layer_decay=0.5)
    # every backbone group is there although frozen: unfreezing later adds no group
    assert {g["layer_group"] for g in groups} == {*range(module.num_groups), HEAD}
    grouped = [p for g in groups for p in g["params"]]
    assert len(grouped) == len({id(p) for p in grouped})  # no parameter twice
    network = [p for n, p in module.named_parameters() if n.startswith(("backbone.", "bottleneck.", "head."))]
    assert {id(p) for p in network} == {id(p) for p in grouped}  # bottleneck: an "extra" group
    for g in groups:
        assert g["lr"] == pytest.approx(0.1 * g["lr_scale"])
    # a pure function: the same model gives the same groups, and building them changes nothing
    again = param_groups(module, lr=0.1, backbone_lr_scale=1.0, layer_decay=0.5)
    assert [(g["name"], [id(p) for p in g["params"]]) for g in again] == [
        (g["name"], [id(p) for p in g["params"]]) for g in groups]
    assert not any(p.requires_grad for p in module.backbone.parameters())


def test_the_model_brings_feature_caching_and_forgetting_callbacks(tmp_path):
    from lit_transfer.checkpointing import Checkpoint
    from lit_transfer.strategies import FinetuningSchedule

    trainer = make_trainer(tmp_path, max_epochs=1, limit_train_batches=1, limit_val_batches=1,
                           callbacks=[FinetuningSchedule([{"epoch": 0, "frozen": "all"}])])
    trainer.fit(make_module(), make_dm())
    types = [type(c) for c in trainer.callbacks]
    assert FeatureCaching in types and ForgettingMeter in types
    # after the config's schedule (it sets the epoch's frozen set first), before checkpointing
    assert types.index(FinetuningSchedule) < types.index(FeatureCaching)
    assert isinstance(trainer.callbacks[-1], Checkpoint)


def test_a_configured_feature_cache_is_the_one_used_not_replaced_by_the_models_default(tmp_path):
    configured = FeatureCaching(enabled=False, memory_mb=5.0)
    trainer = make_trainer(tmp_path, max_epochs=1, limit_train_batches=1, limit_val_batches=1, callbacks=[configured])
    trainer.fit(make_module(), make_dm())
    caches = [c for c in trainer.callbacks if isinstance(c, FeatureCaching)]
    assert caches == [configured] and ForgettingMeter in {type(c) for c in trainer.callbacks}


def test_no_class_in_the_package_reaches_300_lines():
    sizes = {}
    for path in (REPO / "lit_transfer").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                sizes[f"{path.relative_to(REPO)}:{node.name}"] = node.end_lineno - node.lineno + 1
    largest = max(sizes, key=sizes.get)
    assert sizes[largest] < 300, f"{largest} has {sizes[largest]} lines"


def test_feature_cache_budget_is_the_callbacks_argument_not_an_environment_variable(tmp_path, monkeypatch):
    from lit_transfer import features
    from lit_transfer.errors import TransferConfigError

    monkeypatch.setenv("LIT_TRANSFER_FEATURE_CACHE_MB", "1")  # the removed setting: no longer read
    cache = features.default_cache()
    saved = cache.max_memory_bytes
    try:
        from lit_transfer.strategies import FinetuningSchedule

        make_trainer(tmp_path, max_epochs=1, limit_train_batches=1, limit_val_batches=1,
                     callbacks=[FinetuningSchedule([{"epoch": 0, "frozen": "all"}]), FeatureCaching(memory_mb=3.0)]
                     ).fit(make_module(), make_dm())
        assert cache.max_memory_bytes == 3 * 2**20
        assert features.FeatureCache().max_memory_bytes == int(features.DEFAULT_CACHE_MB * 2**20)
    finally:
        cache.set_budget(saved / 2**20)
    with pytest.raises(TransferConfigError, match="feature_cache.memory_mb must be > 0"):
        FeatureCaching(memory_mb=0)


def test_set_budget_evicts_least_recently_used_sets():
    from lit_transfer.features import FeatureCache

    cache = FeatureCache()
    for i in range(3):
        cache._remember(str(i), torch.zeros(256, 256))  # 256 KiB each
    cache.set_budget(0.6)  # room for two
    assert list(cache._mem) == ["1", "2"]
