"""small_cnn honours timm's model contract; Backbone exposes out_features and ordered layer groups."""

import pytest
import timm
import torch
from torch import nn
from timm.models._manipulate import group_parameters

from lit_transfer.errors import TransferConfigError
from lit_transfer.models import Backbone
from lit_transfer.models import small_cnn as _registers_small_cnn  # noqa: F401


def x_(batch=2, chans=1, size=32):
    return torch.randn(batch, chans, size, size)


# --- small_cnn and timm's contract ---------------------------------------------------------------------------


def test_small_cnn_is_registered_with_timm():
    assert timm.is_model("small_cnn")
    assert timm.is_model("small_cnn_tiny")
    assert "small_cnn" in timm.list_models("small_cnn*")
    assert not timm.is_model("small_cnn_huge")


def test_create_model_output_shape_and_channels():
    model = timm.create_model("small_cnn", num_classes=5, in_chans=1).eval()
    assert model.stem[0].in_channels == 1
    assert model(x_(3, 1)).shape == (3, 5)
    with pytest.raises(RuntimeError):  # built for 1 channel, not 3
        model(x_(3, 3))


def test_forward_features_and_forward_head():
    model = timm.create_model("small_cnn", num_classes=5, in_chans=1).eval()
    feats = model.forward_features(x_(2, 1, 32))
    assert feats.shape == (2, 128, 4, 4)  # 3 stride-2 stages: 32 -> 4
    pre = model.forward_head(feats, pre_logits=True)
    assert pre.shape == (2, model.num_features) == (2, 128)
    logits = model.forward_head(feats)
    assert logits.shape == (2, 5)
    assert torch.allclose(logits, model.fc(pre))


def test_small_cnn_tiny_widths():
    model = timm.create_model("small_cnn_tiny", num_classes=0, in_chans=3).eval()
    assert model.num_features == 32
    assert model.forward_features(x_(1, 3, 16)).shape == (1, 32, 4, 4)
    assert model(x_(1, 3, 16)).shape == (1, 32)  # num_classes=0: pooled features
    assert sum(p.numel() for p in model.parameters()) < 30_000


def test_reset_classifier():
    model = timm.create_model("small_cnn", num_classes=5, in_chans=1).eval()
    model.reset_classifier(3)
    assert model.num_classes == 3
    assert model.get_classifier() is model.fc
    assert model.fc.out_features == 3
    assert model(x_(2, 1)).shape == (2, 3)
    model.reset_classifier(0)
    assert isinstance(model.get_classifier(), nn.Identity)
    assert model(x_(2, 1)).shape == (2, 128)


def test_reset_classifier_global_pool():
    model = timm.create_model("small_cnn", num_classes=4, in_chans=1).eval()
    model.reset_classifier(4, global_pool="max")
    feats = model.forward_features(x_(2, 1))
    assert torch.allclose(model.forward_head(feats, pre_logits=True), feats.amax(dim=(2, 3)))


def test_group_matcher_groups_stem_then_stages():
    model = timm.create_model("small_cnn", num_classes=0, in_chans=1)
    for coarse in (True, False):
        grouped = group_parameters(model, model.group_matcher(coarse=coarse))
        keys = sorted(grouped)
        assert len(keys) == 4
        assert all(n.startswith("stem.") for n in grouped[keys[0]])
        for i, key in enumerate(keys[1:]):
            assert grouped[key] and all(n.startswith(f"stages.{i}.") for n in grouped[key])
        flat = [n for k in keys for n in grouped[k]]
        assert sorted(flat) == sorted(n for n, _ in model.named_parameters())


def test_pretrained_cfg():
    model = timm.create_model("small_cnn", num_classes=5, in_chans=1)
    cfg = model.pretrained_cfg
    assert cfg["first_conv"] == "stem.0"
    assert cfg["classifier"] == "fc"
    assert len(cfg["mean"]) == len(cfg["std"]) == 3
    modules = dict(model.named_modules())
    assert isinstance(modules[cfg["first_conv"]], nn.Conv2d)
    assert modules[cfg["classifier"]] is model.get_classifier()
    data_cfg = timm.data.resolve_model_data_config(model)
    assert tuple(data_cfg["mean"]) == tuple(cfg["mean"])
    assert tuple(data_cfg["std"]) == tuple(cfg["std"])


def test_features_only():
    # feature_info declares stem + one entry per stage; timm's features_only wrapper must honour it.
    model = timm.create_model("small_cnn", features_only=True, in_chans=1).eval()
    outs = model(x_(1, 1, 32))
    assert [o.shape[1] for o in outs] == model.feature_info.channels() == [16, 32, 64, 128]
    assert [32 // o.shape[-1] for o in outs] == model.feature_info.reduction() == [1, 2, 4, 8]
    tiny = timm.create_model("small_cnn_tiny", features_only=True, out_indices=(1, 2)).eval()
    assert [o.shape[1] for o in tiny(x_(1, 3, 16))] == [16, 32]


def test_drop_rate_reaches_head():
    model = timm.create_model("small_cnn", num_classes=3, drop_rate=0.5)
    assert model.head_drop.p == 0.5


# --- Backbone ------------------------------------------------------------------------------------------------


def test_backbone_small_cnn_out_features_and_forward():
    bb = Backbone("small_cnn", in_chans=1).eval()
    assert bb.out_features == 128
    assert bb(x_(2, 1)).shape == (2, 128)
    assert isinstance(bb.model.get_classifier(), nn.Identity)  # headless


def test_out_features_is_head_hidden_size_not_num_features():
    bb = Backbone("mobilenetv3_small_050", in_chans=3).eval()
    assert bb.model.head_hidden_size != bb.model.num_features  # the point of this model
    assert bb.out_features == bb.model.head_hidden_size
    assert bb(x_(2, 3, 32)).shape == (2, bb.out_features)


def _check_groups_partition(bb):
    names = [n for n, _ in bb.model.named_parameters()]
    flat = [n for g in bb.groups for n in g.param_names]
    assert sorted(flat) == sorted(names)
    assert len(flat) == len(set(flat))  # every parameter exactly once
    assert [g.index for g in bb.groups] == list(range(len(bb.groups)))
    for g in bb.groups:
        assert g.param_names


def test_small_cnn_groups_ordered_from_input():
    bb = Backbone("small_cnn", in_chans=1)
    _check_groups_partition(bb)
    assert [g.name for g in bb.groups] == ["stem", "stages.0", "stages.1", "stages.2"]
    assert all(n.startswith("stem.") for n in bb.groups[0].param_names)
    assert all(n.startswith("stages.2.") for n in bb.groups[-1].param_names)
    # group_parameters returns the actual parameter objects
    params = dict(bb.model.named_parameters())
    assert [id(p) for p in bb.group_parameters(1)] == [id(params[n]) for n in bb.groups[1].param_names]


def test_resnet18_groups_ordered_from_input():
    bb = Backbone("resnet18", in_chans=3)
    _check_groups_partition(bb)
    assert len(bb.groups) == 5
    first = set(bb.groups[0].param_names)
    assert {"conv1.weight", "bn1.weight", "bn1.bias"} == first
    assert [g.name for g in bb.groups[1:]] == ["layer1", "layer2", "layer3", "layer4"]
    assert all(n.startswith("layer4.") for n in bb.groups[-1].param_names)


def test_group_modules_returns_batchnorms_of_group():
    bb = Backbone("resnet18", in_chans=3)
    mods = bb.group_modules(0)
    assert bb.model.bn1 in mods and bb.model.conv1 in mods
    assert not any(m is bb.model.layer1[0].bn1 for m in mods)
    bns = [m for m in bb.group_modules(4) if isinstance(m, nn.BatchNorm2d)]
    expected = [m for m in bb.model.layer4.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == len(expected) > 0
    assert {id(m) for m in bns} == {id(m) for m in expected}

    small = Backbone("small_cnn", in_chans=1)
    for i in range(len(small.groups)):
        got = {id(m) for m in small.group_modules(i) if isinstance(m, nn.BatchNorm2d)}
        root = small.model.stem if i == 0 else small.model.stages[i - 1]
        assert got == {id(m) for m in root.modules() if isinstance(m, nn.BatchNorm2d)}


def test_backbone_data_config_follows_pretrained_cfg():
    bb = Backbone("small_cnn", in_chans=1)
    assert tuple(bb.data_config["mean"]) == (0.5, 0.5, 0.5)


def test_backbone_with_known_tag_builds():
    bb = Backbone("small_cnn.untrained", in_chans=1)
    assert bb.out_features == 128


def test_backbone_with_unknown_tag_is_a_config_error():
    with pytest.raises(TransferConfigError) as err:
        Backbone("small_cnn.nosuchtag", in_chans=1)
    msg = str(err.value)
    assert "nosuchtag" in msg and "untrained" in msg and "\n" not in msg
