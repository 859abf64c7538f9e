"""Frozen backbones computed once: cached-feature training equals recomputing, and the cache never goes stale."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch

from conftest import make_dm, make_module, make_trainer
from lit_transfer import features
from lit_transfer.callbacks import FeatureCaching
from lit_transfer.data import DomainPairDataModule, DomainSpec
from lit_transfer.strategies import FinetuningSchedule

LP = [{"epoch": 0, "frozen": "all"}]
LP_FT = [{"epoch": 0, "frozen": "all"}, {"epoch": 2, "frozen": 0, "lr_scale": 0.5}]


class RecordBatches(L.Callback):
    """What the training steps were fed: feature rows ([B, D]) or images ([B, C, H, W])."""

    def __init__(self):
        self.kinds: list[tuple[int, str]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.kinds.append((trainer.current_epoch, "features" if batch[0].ndim == 2 else "images"))


def fit(tmp_path, cache: bool, phases=LP, epochs=4, dtype="float32", **module_kwargs):
    L.seed_everything(0)
    module_kwargs.setdefault("lr", 0.05)
    module = make_module(**module_kwargs)
    record = RecordBatches()
    trainer = make_trainer(tmp_path / f"cache{cache}", max_epochs=epochs,
                           callbacks=[FinetuningSchedule(phases), record, FeatureCaching(enabled=cache, dtype=dtype)])
    trainer.fit(module, make_dm())
    test = trainer.test(module, datamodule=trainer.datamodule, verbose=False)
    return module, trainer, record.kinds, test


def assert_same_results(a, b):
    (ma, ta, _, test_a), (mb, tb, _, test_b) = a, b
    sa, sb = ma.state_dict(), mb.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        torch.testing.assert_close(sb[key], sa[key], rtol=1e-5, atol=1e-6, msg=key)
    for key, value in ta.callback_metrics.items():
        torch.testing.assert_close(tb.callback_metrics[key], value, rtol=1e-5, atol=1e-6, msg=key)
    assert len(test_a) == len(test_b)
    for da, db in zip(test_a, test_b):
        assert db == pytest.approx(da, rel=1e-5, abs=1e-6)


def test_linear_probe_on_cached_features_equals_recomputing_every_epoch(tmp_path):
    features.default_cache().clear()
    uncached = fit(tmp_path, cache=False)
    assert {kind for _, kind in uncached[2]} == {"images"}
    misses = features.default_cache().misses
    cached = fit(tmp_path, cache=True)
    assert {kind for _, kind in cached[2]} == {"features"}  # the head really trained on cached rows
    # train + 2 val splits + 2 test splits computed once each; every later epoch is a hit
    assert features.default_cache().misses - misses == 5
    assert features.default_cache().hits >= 3 * 3
    assert_same_results(uncached, cached)
    # the head did learn something: not a vacuous comparison
    assert not torch.equal(cached[0].head.fc.weight, make_module().head.fc.weight)


def test_lp_ft_switches_back_to_images_when_the_backbone_unfreezes(tmp_path):
    uncached = fit(tmp_path, cache=False, phases=LP_FT)
    cached = fit(tmp_path, cache=True, phases=LP_FT)
    epochs = {e: {k for ep, k in cached[2] if ep == e} for e in range(4)}
    assert epochs == {0: {"features"}, 1: {"features"}, 2: {"images"}, 3: {"images"}}
    assert_same_results(uncached, cached)


def test_cache_is_not_used_when_the_backbone_is_not_a_fixed_function(tmp_path):
    # BatchNorm statistics of the frozen backbone keep updating: batches must go through the backbone
    _, _, kinds, _ = fit(tmp_path, cache=True, epochs=1, freeze_bn_stats=False)
    assert {k for _, k in kinds} == {"images"}
    # train-time augmentation: every epoch sees different images
    L.seed_everything(0)
    module, record = make_module(), RecordBatches()
    make_trainer(tmp_path / "aug", max_epochs=1, callbacks=[FinetuningSchedule(LP), record]).fit(
        module, make_dm(augment={"hflip": True}))
    assert {k for _, k in record.kinds} == {"images"}
    # partially frozen backbone: not cached
    _, _, kinds, _ = fit(tmp_path, cache=True, epochs=1, phases=[{"epoch": 0, "frozen": 1}])
    assert {k for _, k in kinds} == {"images"}


def test_dropout_in_the_backbone_disables_the_train_cache():
    module = make_module()
    module.set_frozen(module.num_groups)
    module.train()
    assert features.backbone_is_deterministic(module.backbone)
    module.backbone.model.stem.append(torch.nn.Dropout(0.1).train())
    assert not features.backbone_is_deterministic(module.backbone)


# ------------------------------------------------------------------------------------------- invalidation
def _images(seed=0, n=40):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=g)


def test_key_changes_with_weights_data_transform_and_dtype():
    module, images = make_module(), _images()
    key = features.feature_key(module, images, torch.float32)
    assert features.feature_key(module, images.clone(), torch.float32) == key  # content, not identity

    # weights: an in-place update of one backbone parameter
    with torch.no_grad():
        next(module.backbone.parameters())[0].add_(1e-3)
    key_w = features.feature_key(module, images, torch.float32)
    assert key_w != key
    # BatchNorm running statistics are part of the function too
    bn = next(m for m in module.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d))
    bn.running_mean.add_(0.1)
    key_b = features.feature_key(module, images, torch.float32)
    assert key_b != key_w
    # data: one pixel of one image, or a different subset
    other = images.clone()
    other[3, 0, 2, 2] ^= 1
    assert features.feature_key(module, other, torch.float32) != key_b
    assert features.feature_key(module, images[:-1], torch.float32) != key_b
    # transform: the normalisation the model applies
    module.mean.add_(0.01)
    key_t = features.feature_key(module, images, torch.float32)
    assert key_t != key_b
    # storage dtype and numeric context (precision)
    assert features.feature_key(module, images, torch.float16) != key_t
    assert features.feature_key(module, images, torch.float32, "precision=bf16-mixed") != key_t


def test_cache_recomputes_after_a_change_and_serves_fresh_values():
    cache = features.FeatureCache()
    module, images = make_module(), _images()
    first = features.embeddings(module, images, cache=cache)
    again = features.embeddings(module, images, cache=cache)
    assert (cache.misses, cache.hits) == (1, 1) and again is first
    with torch.no_grad():
        for p in module.backbone.parameters():
            p.mul_(1.5)
    changed = features.embeddings(module, images, cache=cache)
    assert cache.misses == 2 and not torch.allclose(changed, first)
    module.eval()
    with torch.no_grad():
        torch.testing.assert_close(changed, module.embed(images))
    # a different data set of the same shape
    other = features.embeddings(module, _images(seed=1), cache=cache)
    assert cache.misses == 3 and not torch.allclose(other, changed)


def test_data_spec_changes_change_the_cached_split(tmp_path):
    """Shots, shifts and image size change the train split's images, hence the key."""
    module = make_module()
    keys = set()
    for kwargs in ({}, {"target_shots": 3}, {"target": DomainSpec(shifts=[{"name": "invert"}])},
                   {"target": DomainSpec(image_size=10)}):
        dm = make_dm(**kwargs) if "target" not in kwargs else DomainPairDataModule(
            target=kwargs["target"], target_shots=5, batch_size=16)
        images, _ = dm.subset("target", "train")
        keys.add(features.feature_key(module, images, torch.float32))
    assert len(keys) == 4


# --------------------------------------------------------------------------------------- memory bounds
def test_disk_cache_is_a_memmap_shared_across_cache_instances(tmp_path):
    module, images = make_module(), _images()
    a = features.embeddings(module, images, cache=features.FeatureCache(), cache_dir=str(tmp_path))
    files = list(tmp_path.glob("*.npy"))
    assert len(files) == 1 and np.load(files[0], mmap_mode="r").shape == tuple(a.shape)
    other = features.FeatureCache()  # e.g. another sweep trial
    b = features.embeddings(module, images, cache=other, cache_dir=str(tmp_path))
    assert (other.hits, other.misses) == (1, 0)
    torch.testing.assert_close(a, b)
    module.eval()
    with torch.no_grad():
        torch.testing.assert_close(b, module.embed(images))


def test_large_sets_spill_to_disk_and_memory_stays_bounded():
    module = make_module()
    cache = features.FeatureCache(max_memory_mb=40 * 32 * 4 * 1.5 / 2**20)  # room for one 40-row set
    small = features.embeddings(module, _images(0), cache=cache)
    assert cache.memory_bytes == small.numel() * 4
    features.embeddings(module, _images(1), cache=cache)  # evicts the first (LRU)
    assert cache.memory_bytes <= cache.max_memory_bytes
    big = features.embeddings(module, _images(2, n=200), cache=cache)  # larger than the budget: memmap
    assert cache.memory_bytes <= cache.max_memory_bytes
    assert big.shape == (200, module.backbone.out_features)


def test_float16_storage_halves_memory_and_stays_close():
    module, images = make_module(), _images()
    full = features.embeddings(module, images, cache=features.FeatureCache())
    half = features.embeddings(module, images, dtype=torch.float16, cache=features.FeatureCache())
    assert half.dtype == torch.float16 and half.element_size() * 2 == full.element_size()
    torch.testing.assert_close(half.float(), full, rtol=1e-3, atol=1e-3)
    # the module consumes float16 rows as its own dtype
    assert module.embed(half[:4]).dtype == torch.float32


def test_float16_linear_probe_trains(tmp_path):
    module, trainer, kinds, _ = fit(tmp_path, cache=True, epochs=2, dtype="float16")
    assert {k for _, k in kinds} == {"features"}
    assert torch.isfinite(module.head.fc.weight).all()
