"""Loss weights do what they say: each weighted term changes the loss and the gradients by exactly
``weight × term``, so a weight silently ignored (or a term silently zero) fails here.

Every test checks the term is non-zero on its batch first: with a zero term any weight would pass.
"""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from conftest import make_dm, make_module, make_trainer
from lit_transfer.strategies import L2SP, Distill, LwF, MultiTask
from lit_transfer.strategies.objective import kd_loss, training_loss

pytestmark = pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")


@pytest.fixture(scope="module")
def source_ckpt(tmp_path_factory):
    """A small_cnn_tiny trained a few steps on the source domain (a teacher / a source model)."""
    root = tmp_path_factory.mktemp("weights_source")
    L.seed_everything(0)
    module = make_module(lr=3e-3)
    make_trainer(root, max_epochs=1, limit_train_batches=4, limit_val_batches=0).fit(module, make_dm(train_on="source"))
    return root / "ckpt" / "last.ckpt"


def batch(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=g), torch.randint(0, 10, (n,), generator=g)


def grads(module, loss) -> dict[str, torch.Tensor]:
    module.zero_grad()
    loss.backward()
    return {k: p.grad.detach().clone() for k, p in module.named_parameters() if p.grad is not None}


# ------------------------------------------------------------------------------------------------- L2SP
@pytest.mark.parametrize("alpha, beta", [(0.1, 0.0), (0.0, 0.05), (0.1, 0.05)])
def test_l2sp_adds_alpha_times_distance_to_start_and_beta_times_head_norm(alpha, beta):
    torch.manual_seed(0)
    module = make_module(regularizer=L2SP(alpha=alpha, beta=beta))
    deltas = {}
    with torch.no_grad():  # move the backbone away from w0 by a known amount
        for name, p in module.backbone.named_parameters():
            deltas[name] = 0.01 * torch.randn_like(p)
            p.add_(deltas[name])
    distance = sum((d ** 2).sum() for d in deltas.values())
    head_norm = sum((p ** 2).sum() for p in module.head.parameters())
    assert distance > 0 and head_norm > 0
    reg = module.regularizer(module)
    assert float(reg) == pytest.approx(float(0.5 * alpha * distance + 0.5 * beta * head_norm), rel=1e-5)

    # the training loss is the task loss plus exactly that, and so are its gradients
    x, y = batch()
    module.train()
    with_reg = grads(module, module.training_step((x, y), 0))
    plain = grads(module, F.cross_entropy(module(x), y))
    for name, d in deltas.items():
        key = f"backbone.{name}"
        torch.testing.assert_close(with_reg[key] - plain[key], alpha * d, rtol=1e-4, atol=1e-7, msg=key)
    for name, p in module.head.named_parameters():
        key = f"head.{name}"
        torch.testing.assert_close(with_reg[key] - plain[key], beta * p.detach(), rtol=1e-4, atol=1e-7, msg=key)


def test_l2sp_ignores_frozen_weights():
    module = make_module(regularizer=L2SP(alpha=1.0, beta=0.0))
    with torch.no_grad():
        for p in module.backbone.parameters():
            p.add_(0.1)
    assert float(module.regularizer(module)) > 0
    module.set_frozen(module.num_groups)
    assert float(module.regularizer(module)) == 0.0


# ---------------------------------------------------------------------------------------------- Distill
@pytest.mark.parametrize("kd_weight, ce_weight", [(1.0, 1.0), (0.5, 2.0), (3.0, 0.0)])
def test_distill_loss_is_ce_weight_ce_plus_kd_weight_kd(source_ckpt, kd_weight, ce_weight):
    torch.manual_seed(0)
    module = make_module(weights=str(source_ckpt), objective=Distill(temperature=4.0, kd_weight=kd_weight,
                                                                    ce_weight=ce_weight))
    x, y = batch()
    module.train()
    loss, logs, _ = training_loss(module, (x, y), module.objective)
    student, teacher = module(x), module.objective.teacher(x)
    ce, kd = F.cross_entropy(student, y), kd_loss(student, teacher, 4.0)
    assert float(ce) > 0 and float(kd) > 1e-4  # both terms are live on this batch
    assert float(loss) == pytest.approx(float(ce_weight * ce + kd_weight * kd), rel=1e-5)
    torch.testing.assert_close(logs["kd_loss"], kd)
    g = grads(module, loss)
    expected = grads(module, ce_weight * ce + kd_weight * kd)
    for k in expected:
        torch.testing.assert_close(g[k], expected[k], rtol=1e-4, atol=1e-7, msg=k)


# -------------------------------------------------------------------------------------------------- LwF
@pytest.mark.parametrize("weight", [0.0, 1.0, 4.0])
def test_lwf_adds_weight_times_the_distillation_to_the_source_head(source_ckpt, weight):
    torch.manual_seed(0)
    module = make_module(weights=str(source_ckpt), objective=LwF(temperature=2.0, weight=weight))
    with torch.no_grad():  # fine-tuning has moved the source head: the LwF term is non-zero
        for p in module.source_head.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x, y = batch()
    module.train()
    loss, logs, _ = training_loss(module, (x, y), module.objective)
    ce = F.cross_entropy(module(x), y)
    distill = logs["lwf_loss"]
    assert float(distill) > 1e-4
    assert float(loss - ce) == pytest.approx(weight * float(distill), rel=1e-4, abs=1e-7)
    # the source head is trained by the LwF term alone: its gradient scales with the weight
    g = grads(module, loss)
    source = [k for k in g if k.startswith("source_head.")] if weight else []
    assert bool(source) == bool(weight)
    if weight:
        unit = grads(module, training_loss(module, (x, y), module.objective)[1]["lwf_loss"])  # the term alone
        for k in source:
            torch.testing.assert_close(g[k], weight * unit[k], rtol=1e-4, atol=1e-7, msg=k)


# -------------------------------------------------------------------------------------------- MultiTask
@pytest.mark.parametrize("source_weight, target_weight", [(1.0, 1.0), (0.25, 2.0), (0.0, 1.0)])
def test_multitask_loss_is_the_weighted_sum_of_both_domains(source_weight, target_weight):
    torch.manual_seed(0)
    module = make_module(objective=MultiTask(source_weight=source_weight, target_weight=target_weight))
    xs, ys = batch(seed=1)
    xt, yt = batch(seed=2)
    module.train()
    loss, logs, _ = training_loss(module, {"source": (xs, ys), "target": (xt, yt)}, module.objective)
    assert float(logs["source_loss"]) > 0 and float(logs["target_loss"]) > 0
    expected = target_weight * logs["target_loss"] + source_weight * logs["source_loss"]
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)
    g = grads(module, loss)
    # the source head learns only from the source term: no gradient at all when its weight is 0
    assert any(k.startswith("source_head.") and g[k].abs().sum() > 0 for k in g) == bool(source_weight)


def test_l2sp_turns_weight_decay_off_whatever_the_optimizer_config():
    """A model or experiment config's AdamW(weight_decay=0.05) wins over strategy configs; L2-SP must still train
    without decay toward zero (it would pull the backbone away from w0, the point it keeps the weights near)."""
    from functools import partial

    plain = make_module(optimizer=partial(torch.optim.AdamW, weight_decay=0.05))
    l2sp = make_module(optimizer=partial(torch.optim.AdamW, weight_decay=0.05), regularizer=L2SP())
    decays = lambda m: {g["name"]: g["weight_decay"] for g in m.configure_optimizers().param_groups}  # noqa: E731
    assert any(wd == 0.05 for wd in decays(plain).values())  # the config's decay applies without L2-SP
    assert set(decays(l2sp).values()) == {0.0}
