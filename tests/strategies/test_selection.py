"""Label-free selection scores: DEV's density ratio and risk against hand-made inputs."""

import pytest
import torch

from lit_transfer.strategies.selection import density_ratio, dev_risk


def test_dev_risk_against_a_hand_computation():
    # w·l = [0, 1, 0, 3]: mean 1; mean w = 2; Cov(w·l, w) = 2/3; Var(w) = 4/3 -> η = −0.5
    # risk = 1 + (−0.5)(2) − (−0.5) = 0.5
    loss, w = torch.tensor([0.0, 1.0, 0.0, 1.0]), torch.tensor([1.0, 1.0, 3.0, 3.0])
    assert dev_risk(loss, w).item() == pytest.approx(0.5)


def test_dev_risk_with_equal_weights_is_the_weighted_mean_loss():
    loss = torch.tensor([0.2, 0.4, 0.9])
    assert dev_risk(loss, torch.full((3,), 2.0)).item() == pytest.approx(2.0 * loss.mean().item())


def test_density_ratio_weights_the_source_examples_that_look_like_the_target():
    g = torch.Generator().manual_seed(0)
    far = torch.randn(60, 4, generator=g)  # source-only region
    near = torch.randn(20, 4, generator=g) + 4.0  # source examples inside the target's region
    target = torch.randn(80, 4, generator=g) + 4.0
    w = density_ratio(torch.cat([far, near]), target)
    assert w.shape == (80,) and bool((w > 0).all())
    assert w[60:].mean() > 10 * w[:60].mean()
    # same distribution on both sides: ratios around 1 (n_s = n_t)
    same = density_ratio(torch.randn(100, 4, generator=g), torch.randn(100, 4, generator=g))
    assert 0.7 < same.mean().item() < 1.4


def test_dev_prefers_the_model_whose_source_errors_are_off_the_target():
    """Two models with the same source val loss: DEV ranks higher the one that errs where the target lies."""
    g = torch.Generator().manual_seed(1)
    src = torch.cat([torch.randn(50, 2, generator=g), torch.randn(50, 2, generator=g) + 3.0])
    tgt = torch.randn(100, 2, generator=g) + 3.0
    w = density_ratio(src, tgt)
    errs_on_target_side = torch.cat([torch.zeros(50), torch.ones(50)])
    errs_elsewhere = torch.cat([torch.ones(50), torch.zeros(50)])
    assert dev_risk(errs_on_target_side, w) > dev_risk(errs_elsewhere, w)
