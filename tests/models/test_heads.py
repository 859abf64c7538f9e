"""LinearHead, MLPHead, CosineHead: shapes, semantics, and selection in TransferClassifier."""

import functools

import pytest
import torch
from torch import nn

from lit_transfer.models import CosineHead, Head, LinearHead, MLPHead
from lit_transfer.module import TransferClassifier


@pytest.mark.parametrize(
    "make", [LinearHead, MLPHead, CosineHead, functools.partial(MLPHead, hidden=[8, 6], norm=False)]
)
def test_heads_map_embeddings_to_logits(make):
    torch.manual_seed(0)
    head = make(12, 5).eval()
    assert isinstance(head, Head)
    assert (head.in_features, head.num_classes) == (12, 5)
    z = torch.randn(4, 12)
    out = head(z)
    assert out.shape == (4, 5)
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in head.parameters() if p.requires_grad)


def test_linear_head_is_affine():
    head = LinearHead(6, 3).eval()
    z = torch.randn(5, 6)
    assert torch.allclose(head(z), z @ head.fc.weight.T + head.fc.bias)


def test_linear_head_dropout():
    head = LinearHead(6, 3, dropout=0.3)
    assert head.drop.p == 0.3
    head.train()
    torch.manual_seed(0)
    z = torch.randn(64, 6)
    assert not torch.allclose(head(z), head.eval()(z))  # dropout active in train mode only


def test_mlp_head_hidden_sizes_and_dropout():
    head = MLPHead(10, 4, hidden=[32, 16], dropout=0.25)
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(10, 32), (32, 16), (16, 4)]
    drops = [m for m in head.modules() if isinstance(m, nn.Dropout)]
    assert len(drops) == 2 and all(d.p == 0.25 for d in drops)
    assert sum(isinstance(m, nn.LayerNorm) for m in head.modules()) == 2
    assert sum(isinstance(m, nn.GELU) for m in head.modules()) == 2


def test_mlp_head_without_norm_or_hidden():
    head = MLPHead(10, 4, hidden=[7], norm=False)
    assert not any(isinstance(m, nn.LayerNorm) for m in head.modules())
    linear_only = MLPHead(10, 4, hidden=[]).eval()
    assert [m for m in linear_only.modules() if isinstance(m, nn.Linear)] == [linear_only.fc]
    z = torch.randn(3, 10)
    assert torch.allclose(linear_only(z), linear_only.fc(z))


def test_mlp_head_dropout_only_in_train():
    head = MLPHead(10, 4, hidden=[64], dropout=0.5)
    z = torch.randn(32, 10)
    head.eval()
    a, b = head(z), head(z)
    assert torch.equal(a, b)
    head.train()
    torch.manual_seed(1)
    assert not torch.allclose(head(z), a)


def test_cosine_head_scale_invariant_and_bounded():
    torch.manual_seed(0)
    head = CosineHead(16, 5, scale=7.0).eval()
    z = torch.randn(8, 16)
    logits = head(z)
    for factor in (0.01, 3.0, 1000.0):
        assert torch.allclose(head(z * factor), logits, atol=1e-5)
    assert logits.abs().max() <= 7.0 + 1e-5
    # logits are s · cos: a feature equal to a class weight gets exactly the scale
    aligned = head.weight[2:3].detach() * 5.0
    assert torch.allclose(head(aligned)[0, 2], torch.tensor(7.0), atol=1e-4)
    assert torch.allclose(head(-aligned)[0, 2], torch.tensor(-7.0), atol=1e-4)


def test_cosine_head_scale_learnable_or_fixed():
    learn = CosineHead(4, 2, scale=10.0)
    assert learn.log_scale.requires_grad
    assert torch.allclose(learn.log_scale.exp(), torch.tensor(10.0))
    fixed = CosineHead(4, 2, scale=10.0, learn_scale=False)
    assert not fixed.log_scale.requires_grad
    fixed(torch.randn(3, 4)).sum().backward()
    assert fixed.log_scale.grad is None and fixed.weight.grad is not None


def _uint8(batch=2, chans=1, size=16):
    return torch.randint(0, 256, (batch, chans, size, size), dtype=torch.uint8)


def test_transfer_classifier_default_head_is_linear():
    module = TransferClassifier("small_cnn_tiny", num_classes=4, in_chans=1)
    assert type(module.head) is LinearHead
    assert module.head.in_features == module.backbone.out_features == 32
    assert module(_uint8()).shape == (2, 4)


def test_transfer_classifier_head_as_partial():
    module = TransferClassifier("small_cnn_tiny", num_classes=4, in_chans=1, head=functools.partial(MLPHead, hidden=[32]))
    assert isinstance(module.head, MLPHead)
    linears = [m for m in module.head.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(32, 32), (32, 4)]
    assert module.eval()(_uint8()).shape == (2, 4)
    # the head's parameters train in the head's param group
    head_groups = [g for g in module.param_groups() if g["layer_group"] == -1]
    head_params = {id(p) for g in head_groups for p in g["params"]}
    assert head_params == {id(p) for p in module.head.parameters()}


def test_transfer_classifier_head_as_class():
    module = TransferClassifier("small_cnn_tiny", num_classes=3, in_chans=1, head=CosineHead).eval()
    assert isinstance(module.head, CosineHead)
    assert module.head.weight.shape == (3, module.backbone.out_features)
    logits = module(_uint8(4))
    assert logits.shape == (4, 3) and logits.abs().max() <= module.head.log_scale.exp() + 1e-5


def test_head_selected_from_config_class_path():
    # What a model YAML's ``head: {class_path: ..., init_args: ...}`` goes through in the CLI.
    from lightning.pytorch.cli import LightningArgumentParser

    parser = LightningArgumentParser()
    parser.add_lightning_class_args(TransferClassifier, "model", subclass_mode=False)
    head = '{"class_path": "lit_transfer.models.MLPHead", "init_args": {"hidden": [16], "dropout": 0.2}}'
    cfg = parser.parse_args(
        ["--model.backbone=small_cnn_tiny", "--model.num_classes=3", "--model.in_chans=1", f"--model.head={head}"]
    )
    module = parser.instantiate_classes(cfg).model
    assert isinstance(module.head, MLPHead)
    linears = [m for m in module.head.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(32, 16), (16, 3)]
    assert [m.p for m in module.head.modules() if isinstance(m, nn.Dropout)] == [0.2]

    cfg = parser.parse_args(["--model.backbone=small_cnn_tiny", "--model.head=lit_transfer.models.CosineHead"])
    assert isinstance(parser.instantiate_classes(cfg).model.head, CosineHead)
