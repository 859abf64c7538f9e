"""Shifts: each changes images as claimed, returns uint8, and is deterministic given its seed."""

import pytest
import torch

from lit_transfer.data import list_shifts, register_shift
from lit_transfer.data.shifts import _SHIFTS, apply_shifts, check_shift


@pytest.fixture
def images():
    return torch.randint(0, 256, (16, 3, 12, 12), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def shift(images, name, seed=0, **params):
    return apply_shifts(images, [{"name": name, **params}], seed, "test")


def test_builtin_shifts_registered():
    assert {"rotate", "invert", "gaussian_noise", "blur", "color_jitter", "rescale"} <= set(list_shifts())


@pytest.mark.parametrize(
    "spec",
    [{"name": "rotate", "degrees": 30, "random": True}, {"name": "invert"}, {"name": "gaussian_noise", "std": 0.1},
     {"name": "blur", "sigma": 1.0}, {"name": "color_jitter", "brightness": 0.5, "contrast": 0.5, "saturation": 0.5},
     {"name": "rescale", "scale": 0.7}],
)
def test_every_shift_changes_images_keeps_dtype_and_is_deterministic(images, spec):
    out = apply_shifts(images, [spec], 0, "d")
    assert out.dtype == torch.uint8 and out.shape == images.shape
    assert not torch.equal(out, images)
    assert torch.equal(out, apply_shifts(images, [spec], 0, "d"))


def test_invert_twice_is_identity(images):
    once = shift(images, "invert")
    assert torch.equal(once, 255 - images)
    assert torch.equal(shift(once, "invert"), images)


@pytest.mark.parametrize("size", [8, 7])
def test_rotate_90_matches_rot90(size):
    x = torch.randint(0, 256, (4, 1, size, size), dtype=torch.uint8)
    assert torch.equal(shift(x, "rotate", degrees=90), torch.rot90(x, 1, (2, 3)))
    assert torch.equal(shift(x, "rotate", degrees=-90), torch.rot90(x, -1, (2, 3)))
    assert torch.equal(shift(x, "rotate", degrees=0), x)


def test_random_rotate_depends_on_split_seed_only(images):
    a = shift(images, "rotate", seed=0, degrees=45, random=True)
    assert torch.equal(a, shift(images, "rotate", seed=0, degrees=45, random=True))
    assert not torch.equal(a, shift(images, "rotate", seed=1, degrees=45, random=True))
    # per-sample angles: the same image repeated is rotated differently
    same = images[:1].expand(8, -1, -1, -1)
    out = shift(same, "rotate", degrees=45, random=True)
    assert len({tuple(o.flatten().tolist()) for o in out}) == 8


def test_rescale_zooms_about_the_centre():
    x = torch.zeros(1, 1, 8, 8, dtype=torch.uint8)
    x[..., 2:6, 2:6] = 255
    assert shift(x, "rescale", scale=2.0).min() >= 128  # the centre block fills the frame
    small = shift(torch.full((1, 1, 8, 8), 200, dtype=torch.uint8), "rescale", scale=0.5)
    assert small[..., 0, :].max() == 0 and small[..., 4, 4] == 200  # black border, content in the middle


def test_gaussian_noise_std_is_in_unit_range():
    x = torch.full((4, 1, 32, 32), 128, dtype=torch.uint8)
    diff = shift(x, "gaussian_noise", std=0.1).float() - 128
    assert 0.08 * 255 < diff.std() < 0.12 * 255


def test_blur_smooths_and_keeps_constant_images(images):
    assert shift(images, "blur", sigma=1.0).float().std() < images.float().std() * 0.7
    flat = torch.full((2, 3, 9, 9), 77, dtype=torch.uint8)
    assert torch.equal(shift(flat, "blur", sigma=1.0, kernel_size=3), flat)


def test_color_jitter_saturation_is_a_no_op_on_grayscale():
    gray = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8)
    assert torch.equal(shift(gray, "color_jitter", saturation=0.9), gray)
    assert not torch.equal(shift(gray, "color_jitter", brightness=0.9), gray)


def test_shifts_compose_in_order(images):
    both = apply_shifts(images, [{"name": "rotate", "degrees": 90}, {"name": "invert"}], 0, "d")
    assert torch.equal(both, 255 - torch.rot90(images, 1, (2, 3)))


def test_unknown_shift_and_bad_params_are_one_line_errors():
    with pytest.raises(ValueError, match=r"Unknown shift 'rotat'\. Did you mean 'rotate'") as err:
        check_shift({"name": "rotat", "degrees": 90})
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="Shift 'rotate' got bad parameters"):
        check_shift({"name": "rotate", "angle": 90})


def test_register_custom_shift(images):
    @register_shift("test_zero")
    def zero(x, gen):
        return torch.zeros_like(x)

    try:
        assert shift(images, "test_zero").sum() == 0
    finally:
        del _SHIFTS["test_zero"]


# ------------------------------------------------------------------------- digits_m (MNIST-M construction)
def test_patch_blend_is_the_absolute_difference_with_a_photo_crop():
    from lit_transfer.data.shifts import blend_patches, patch_blend, sample_photos

    digit = torch.tensor([[[0, 255], [128, 10]]], dtype=torch.uint8).expand(3, 2, 2)[None]
    patch = torch.tensor([[[200, 0], [100, 10]], [[0, 255], [128, 10]], [[50, 60], [255, 0]]], dtype=torch.uint8)[None]
    expected = torch.tensor([[[200, 255], [28, 0]], [[0, 0], [0, 0]], [[50, 195], [127, 10]]], dtype=torch.uint8)
    assert torch.equal(blend_patches(digit, patch)[0], expected)
    # patch_blend: every output is |crop - image| for some crop of one of sklearn's bundled photos
    images = torch.randint(0, 256, (3, 3, 5, 5), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    out = patch_blend(images, torch.Generator().manual_seed(0))
    photos = sample_photos()
    for img, blended in zip(images, out):
        crops = torch.cat([ph.unfold(1, 5, 1).unfold(2, 5, 1).permute(1, 2, 0, 3, 4).reshape(-1, 3, 5, 5)
                           for ph in photos])
        assert ((crops.to(torch.int16) - img.to(torch.int16)).abs().to(torch.uint8) == blended).flatten(1).all(1).any()
    assert torch.equal(out, patch_blend(images, torch.Generator().manual_seed(0)))  # seeded
    with pytest.raises(Exception, match="needs RGB images"):
        patch_blend(images[:, :1], torch.Generator())


def test_digits_m_source_and_target_are_disjoint_halves_of_the_digits():
    import yaml
    from sklearn.datasets import load_digits

    from lit_transfer.data import DomainPairDataModule
    from lit_transfer.data.domains import DomainSpec, load_domain
    from lit_transfer.data.prepare import half_indices
    from pathlib import Path

    cfg = yaml.safe_load((Path(__file__).resolve().parents[2] / "configs/data/digits_to_digits_m.yaml").read_text())["data"]
    src, tgt = (load_domain(DomainSpec(**cfg[r]), 0) for r in ("source", "target"))
    assert src.images.shape[1:] == tgt.images.shape[1:] == (3, 28, 28)
    assert set(src.origin.tolist()).isdisjoint(tgt.origin.tolist())
    assert len(src.origin) + len(tgt.origin) == 1797
    labels = torch.from_numpy(load_digits().target)
    assert torch.equal(src.labels, labels[src.origin]) and torch.equal(tgt.labels, labels[tgt.origin])
    counts = torch.bincount(src.labels) - torch.bincount(tgt.labels)
    assert counts.abs().max() <= 1  # stratified: each class cut in two
    # digits_m image i is |photo crop − digit| of the same digit (upsampled, RGB): where the digit is black, the
    # pixel is the photo's; the target is no copy of the source transform
    plain = load_domain(DomainSpec(name="digits", half=1, channels=3, image_size=28), 0)
    assert torch.equal(plain.origin, tgt.origin) and not torch.equal(plain.images, tgt.images)
    dm = DomainPairDataModule(**cfg)
    dm.setup("fit")
    assert dm.val_domains == ["target", "source"] and dm.in_chans == 3 and dm.num_classes == 10
    # halves depend on labels and split seed only; another seed, another (still disjoint) cut
    a, b = half_indices(labels, {}, 0, 1), half_indices(labels, {}, 1, 1)
    assert set(a.tolist()).isdisjoint(b.tolist()) and len(a) + len(b) == 1797 and not torch.equal(a, src.origin)


def test_half_is_validated():
    from lit_transfer.data.domains import DomainSpec, check_spec

    with pytest.raises(Exception, match="half must be 0, 1 or null"):
        check_spec(DomainSpec(half=2))


def test_mnist_to_mnist_m_config_loads_real_mnist_files_into_disjoint_blended_halves(tmp_path):
    import yaml
    from pathlib import Path

    from test_real_data_configs import write_mnist
    from lit_transfer.data import DomainPairDataModule
    from lit_transfer.data.domains import DomainSpec, load_domain

    write_mnist(tmp_path)
    cfg = yaml.safe_load((Path(__file__).resolve().parents[2] / "configs/data/mnist_to_mnist_m.yaml").read_text())["data"]
    for role in ("source", "target"):
        cfg[role].update(root=str(tmp_path), download=False)
    dm = DomainPairDataModule(**{**cfg, "train_on": "source", "unlabeled_target": True})
    dm.setup("fit")
    assert dm.in_chans == 3 and dm.subset("target", "unlabeled")[0].shape[1:] == (3, 28, 28)
    src, tgt = load_domain(DomainSpec(**cfg["source"]), 0), load_domain(DomainSpec(**cfg["target"]), 0)
    assert set(src.origin.tolist()).isdisjoint(tgt.origin.tolist()) and len(src.origin) + len(tgt.origin) == 60
    assert set(src.official) == set(tgt.official) == {"train", "test"}  # official splits halved, not mixed
    plain = load_domain(DomainSpec(**{**cfg["target"], "shifts": []}), 0)
    assert not torch.equal(plain.images, tgt.images)  # blended with photo patches
