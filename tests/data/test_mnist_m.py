"""The real DA benchmarks' data: MNIST-M on real digits (``mnist5k_m``) built as Ganin et al. did (|patch − digit|
per channel), deterministic, and source and target images disjoint in each shipped pair, for every seed."""

from __future__ import annotations

import pytest
import torch
import yaml

from conftest import REPO
from lit_transfer.data import DomainPairDataModule, DomainSpec, registry, released, shifts
from lit_transfer.data.domains import BUILT_ON, Domain, load_domain, share_images


def test_blend_is_the_absolute_difference_per_channel_on_a_hand_made_example():
    digit = torch.tensor([[0, 255], [100, 30]], dtype=torch.uint8).expand(1, 3, 2, 2)  # one gray 2x2 digit
    photo = torch.tensor([[[10, 20], [30, 40]],  # R
                          [[255, 0], [100, 200]],  # G
                          [[7, 7], [7, 7]]], dtype=torch.uint8)  # B: a photo exactly the digit's size
    out = shifts.blend_with_photos(digit, torch.Generator().manual_seed(0), [photo])
    assert out.dtype == torch.uint8
    assert out[0].tolist() == [[[10, 235], [70, 10]],  # |10-0| |20-255| |30-100| |40-30|
                               [[255, 255], [0, 170]],
                               [[7, 248], [93, 23]]]
    # a larger photo, constant per channel: every crop position gives the same patch
    flat = torch.tensor([200, 50, 0], dtype=torch.uint8).view(3, 1, 1).expand(3, 9, 7).contiguous()
    out = shifts.blend_with_photos(digit, torch.Generator().manual_seed(1), [flat])
    assert out[0, :, 0, 1].tolist() == [55, 205, 255] and out[0, :, 1, 0].tolist() == [100, 50, 100]
    with pytest.raises(Exception, match="needs RGB images"):
        shifts.blend_with_photos(digit[:, :1], torch.Generator(), [photo])


def test_mnist5k_m_blends_each_mnist5k_digit_with_a_real_photo_crop(monkeypatch):
    digits = torch.tensor([[[0, 255], [255, 0]], [[50, 50], [0, 0]]], dtype=torch.uint8)[:, None]  # 2 digits 2x2
    monkeypatch.setattr(released, "_mnist5k", lambda spec: Domain(digits, torch.tensor([3, 7])))
    photo = torch.arange(12, dtype=torch.uint8).view(3, 2, 2) * 20  # values 0..220, the digits' size
    monkeypatch.setattr(shifts, "real_photos", lambda: [photo])
    spec = DomainSpec(name="mnist5k_m", image_size=2)
    domain = registry.DOMAINS["mnist5k_m"].load(spec)
    assert domain.labels.tolist() == [3, 7] and domain.images.shape == (2, 3, 2, 2)
    expected = (photo.int() - digits.int()).abs()  # [2, 3, 2, 2]: |patch − digit| per channel
    assert torch.equal(domain.images.int(), expected)
    assert torch.equal(registry.DOMAINS["mnist5k_m"].load(spec).images, domain.images)  # deterministic


def test_mnist5k_m_is_28_px_rgb_real_digits_on_real_photos():
    spec = DomainSpec(name="mnist5k_m", half=1, image_size=28)
    target = load_domain(spec, 0)
    source = load_domain(DomainSpec(name="mnist5k", half=0, channels=3, image_size=28), 0)
    assert target.images.shape == (2500, 3, 28, 28) and target.labels.bincount().tolist() == [250] * 10
    assert torch.equal(load_domain(spec, 0).images, target.images)
    photos = shifts.real_photos()
    assert len(photos) == 6 and all(p.shape[0] == 3 and min(p.shape[1:]) >= 28 for p in photos)
    # the target's image i is the blend of mnist5k's image origin[i]: where that digit is black (0), the pixel
    # is the photo's; the background is not black any more (colour patches), unlike the source's
    assert source.images[:, :, 0, 0].float().mean() < 5 < target.images[:, :, 0, 0].float().mean()


DA_PAIRS = ["uci_digits_to_mnist5k", "mnist5k_to_uci_digits", "mnist5k_to_mnist5k_m"]


def _specs(name: str) -> dict[str, DomainSpec]:
    data = yaml.safe_load((REPO / "configs" / "data" / f"{name}.yaml").read_text())["data"]
    return {role: DomainSpec(**data[role]) for role in ("source", "target")}


@pytest.mark.parametrize("name", DA_PAIRS)
def test_source_and_target_images_are_disjoint_for_every_seed(name):
    specs = _specs(name)
    assert not share_images(specs["source"], specs["target"])  # what DA objectives check before training
    base = {role: BUILT_ON.get(s.name, s.name) for role, s in specs.items()}
    if base["source"] != base["target"]:  # two datasets (UCI digits, MNIST): no image can be in both
        assert {base["source"], base["target"]} == {"digits", "mnist5k"}
        return
    halves = []
    for seed in (0, 1):  # split_seed: null -> the run's seed: each seed draws its own halves
        origin = {role: load_domain(spec, seed).origin for role, spec in specs.items()}
        assert not set(origin["source"].tolist()) & set(origin["target"].tolist())
        assert len(origin["source"]) + len(origin["target"]) == 5000
        halves.append(origin["source"])
    assert not torch.equal(halves[0], halves[1])


@pytest.mark.parametrize("name", DA_PAIRS)
def test_each_domains_train_val_test_splits_are_disjoint(name):
    dm = DomainPairDataModule(**yaml.safe_load((REPO / "configs" / "data" / f"{name}.yaml").read_text())["data"])
    for role, splits in dm.split_indices().items():
        seen = [set(splits[s].tolist()) for s in ("train", "val", "test")]
        assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2]), role


def test_a_pair_of_the_same_mnist5k_half_shares_images():
    assert share_images(DomainSpec(name="mnist5k", half=0), DomainSpec(name="mnist5k_m", half=0))
    assert share_images(DomainSpec(name="mnist5k", root="/a"), DomainSpec(name="mnist5k_m", root="/b"))
