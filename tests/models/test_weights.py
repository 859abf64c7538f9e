"""Loading transferred weights into a Backbone: file formats, wrapper prefixes, channel adaptation, safety."""

import builtins
import pickle

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.models._manipulate import adapt_input_conv

from lit_transfer.errors import TransferConfigError
from lit_transfer.models import Backbone
from lit_transfer.models.weights import backbone_state_dict, read_state_dict
from lit_transfer.module import TransferClassifier


def randomized(model):
    """Give every float tensor (buffers too) distinctive values, so equality can't hold by chance."""
    gen = torch.Generator().manual_seed(123)
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.randn(t.shape, generator=gen))
            else:
                t.fill_(7)
    return model


def source_model(name="small_cnn", in_chans=3, num_classes=0):
    return randomized(timm.create_model(name, num_classes=num_classes, in_chans=in_chans))


def assert_loaded(backbone, expected: dict):
    got = backbone.model.state_dict()
    assert set(got) == set(expected)
    for k, v in expected.items():
        assert torch.equal(got[k], v), k


def test_fresh_backbones_differ():
    # The loading tests below would be vacuous if two backbones started equal.
    a, b = Backbone("small_cnn", 3), source_model()
    assert not torch.equal(a.model.stem[0].weight, b.stem[0].weight)


def test_safetensors(tmp_path):
    src = source_model()
    state = {k: v.contiguous() for k, v in src.state_dict().items()}
    save_file(state, tmp_path / "w.safetensors")
    assert_loaded(Backbone("small_cnn", 3, weights=str(tmp_path / "w.safetensors")), state)


def test_pth_plain_state_dict(tmp_path):
    src = source_model()
    torch.save(src.state_dict(), tmp_path / "w.pth")
    assert_loaded(Backbone("small_cnn", 3, weights=str(tmp_path / "w.pth")), src.state_dict())


def test_pth_nested_state_dict_with_ddp_prefix(tmp_path):
    src = source_model()
    wrapped = {f"module.{k}": v for k, v in src.state_dict().items()}
    torch.save({"state_dict": wrapped, "epoch": 3, "arch": "small_cnn"}, tmp_path / "w.pth")
    assert_loaded(Backbone("small_cnn", 3, weights=str(tmp_path / "w.pth")), src.state_dict())


def test_pt_model_key_and_compiled_prefix(tmp_path):
    src = source_model()
    wrapped = {f"module._orig_mod.{k}": v for k, v in src.state_dict().items()}
    torch.save({"model": wrapped}, tmp_path / "w.pt")
    assert_loaded(Backbone("small_cnn", 3, weights=str(tmp_path / "w.pt")), src.state_dict())


def test_lit_transfer_checkpoint_keeps_backbone_drops_head(tmp_path):
    module = TransferClassifier("small_cnn_tiny", num_classes=4, in_chans=1)
    randomized(module.backbone.model)
    state = module.state_dict()
    assert any(k.startswith("backbone.model.") for k in state) and any(k.startswith("head.") for k in state)
    torch.save(
        {"state_dict": state, "epoch": 1, "global_step": 10, "pytorch-lightning_version": "2.6.6",
         "hyper_parameters": dict(module.hparams)},
        tmp_path / "last.ckpt",
    )
    bb = Backbone("small_cnn_tiny", 1, weights=str(tmp_path / "last.ckpt"))
    expected = {k[len("backbone.model."):]: v for k, v in state.items() if k.startswith("backbone.model.")}
    assert_loaded(bb, expected)
    # the head's keys were not part of what was read into the backbone
    kept = backbone_state_dict(read_state_dict(tmp_path / "last.ckpt"))
    assert not any(k.startswith("head.") or k.startswith("fc.") for k in kept)

    # and a whole TransferClassifier can start from it (a new head, e.g. other classes)
    target = TransferClassifier("small_cnn_tiny", num_classes=7, in_chans=1, weights=str(tmp_path / "last.ckpt"))
    assert_loaded(target.backbone, expected)
    assert target.head.fc.out_features == 7


def test_real_lightning_checkpoint_loads_weights_only(tmp_path):
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    module = TransferClassifier("small_cnn_tiny", num_classes=3, in_chans=1)
    data = TensorDataset(torch.randint(0, 256, (4, 1, 16, 16), dtype=torch.uint8), torch.tensor([0, 1, 2, 0]))
    trainer = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(module, DataLoader(data, batch_size=4))
    trainer.save_checkpoint(tmp_path / "real.ckpt")
    bb = Backbone("small_cnn_tiny", 1, weights=str(tmp_path / "real.ckpt"))
    assert_loaded(bb, module.backbone.model.state_dict())


def test_classifier_of_full_timm_model_is_dropped(tmp_path):
    full = source_model("resnet18", num_classes=1000)
    assert "fc.weight" in full.state_dict()
    torch.save(full.state_dict(), tmp_path / "r18.pth")
    bb = Backbone("resnet18", 3, weights=str(tmp_path / "r18.pth"))
    expected = {k: v for k, v in full.state_dict().items() if not k.startswith("fc.")}
    assert_loaded(bb, expected)


def test_classifier_dropped_for_small_cnn_with_classes(tmp_path):
    full = source_model("small_cnn", num_classes=10)
    save_file({k: v.contiguous() for k, v in full.state_dict().items()}, tmp_path / "w.safetensors")
    bb = Backbone("small_cnn", 3, weights=str(tmp_path / "w.safetensors"))
    assert_loaded(bb, {k: v for k, v in full.state_dict().items() if not k.startswith("fc.")})


@pytest.mark.parametrize("src_chans,dst_chans", [(3, 1), (1, 3)])
def test_channel_adaptation_matches_timm(tmp_path, src_chans, dst_chans):
    src = source_model(in_chans=src_chans)
    torch.save(src.state_dict(), tmp_path / "w.pth")
    bb = Backbone("small_cnn", dst_chans, weights=str(tmp_path / "w.pth"))
    w = src.state_dict()["stem.0.weight"]
    expected = adapt_input_conv(dst_chans, w.clone(), base_chans=src_chans)
    got = bb.model.stem[0].weight
    assert got.shape == (16, dst_chans, 3, 3)
    assert torch.allclose(got, expected)
    if dst_chans == 1:
        assert torch.allclose(got, w.sum(dim=1, keepdim=True))  # grayscale: sum over RGB
    else:
        assert torch.allclose(got, w.repeat(1, 3, 1, 1) / 3)  # repeated and rescaled
    # every other tensor is loaded unchanged
    rest = {k: v for k, v in src.state_dict().items() if k != "stem.0.weight"}
    for k, v in rest.items():
        assert torch.equal(bb.model.state_dict()[k], v), k


def test_channel_adaptation_from_lit_checkpoint(tmp_path):
    module = TransferClassifier("small_cnn_tiny", num_classes=4, in_chans=3)
    randomized(module.backbone.model)
    torch.save({"state_dict": module.state_dict()}, tmp_path / "rgb.ckpt")
    bb = Backbone("small_cnn_tiny", 1, weights=str(tmp_path / "rgb.ckpt"))
    w = module.backbone.model.stem[0].weight.detach()
    assert torch.allclose(bb.model.stem[0].weight, adapt_input_conv(1, w.clone(), base_chans=3))


class _Payload:
    """Unpickling this runs ``open(marker, 'w')``: creating the marker file is the 'exploit'."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.open, (self.marker, "w"))


@pytest.mark.parametrize("suffix", [".pth", ".ckpt"])
def test_pickled_object_is_refused_not_executed(tmp_path, suffix):
    # Control: the payload really does create its marker when unpickled without protection.
    control = tmp_path / "control_marker"
    pickle.loads(pickle.dumps(_Payload(control))).close()
    assert control.exists()

    marker = tmp_path / "pwned_marker"
    path = tmp_path / f"evil{suffix}"
    torch.save({"state_dict": {"stem.0.weight": torch.zeros(1)}, "payload": _Payload(marker)}, path)
    with pytest.raises(TransferConfigError) as err:
        Backbone("small_cnn", 3, weights=str(path))
    assert not marker.exists()
    msg = str(err.value)
    assert "pickled Python objects" in msg and str(path) in msg and "\n" not in msg
    assert "weights_only" not in msg and "trust" not in msg  # never advice to disable the safety check


def test_pickled_module_is_refused(tmp_path):
    torch.save(timm.create_model("small_cnn_tiny", num_classes=0), tmp_path / "whole_model.pth")
    with pytest.raises(TransferConfigError, match="cannot read weights file"):
        Backbone("small_cnn_tiny", 3, weights=str(tmp_path / "whole_model.pth"))


@pytest.mark.parametrize("payload", [b"", b"not a safetensors file at all, just text"])
def test_corrupt_safetensors_is_a_config_error(tmp_path, payload):
    path = tmp_path / "broken.safetensors"
    path.write_bytes(payload)
    with pytest.raises(TransferConfigError) as err:
        Backbone("small_cnn", 3, weights=str(path))
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_corrupt_pth_is_a_config_error(tmp_path):
    path = tmp_path / "broken.pth"
    path.write_bytes(b"\x00\x01garbage")
    with pytest.raises(TransferConfigError, match="cannot read weights file"):
        Backbone("small_cnn", 3, weights=str(path))


@pytest.mark.parametrize("obj", [{"epoch": 1}, [torch.zeros(1)], {"state_dict": {"a": 1}}])
def test_file_without_tensor_state_dict(tmp_path, obj):
    torch.save(obj, tmp_path / "w.pth")
    with pytest.raises(TransferConfigError, match="no state_dict of tensors"):
        Backbone("small_cnn", 3, weights=str(tmp_path / "w.pth"))


def test_partial_state_dict_names_missing_keys(tmp_path):
    state = source_model().state_dict()
    del state["stages.2.1.1.running_var"]
    torch.save(state, tmp_path / "w.pth")
    with pytest.raises(TransferConfigError) as err:
        Backbone("small_cnn", 3, weights=str(tmp_path / "w.pth"))
    assert "1 missing" in str(err.value) and "stages.2.1.1.running_var" in str(err.value)


def test_width_mismatch_names_shapes(tmp_path):
    # small_cnn_tiny's stem (8 channels) in small_cnn (16 channels): same key names, other shapes
    other = timm.create_model("small_cnn", num_classes=0, widths=(32, 64, 128), stem_width=8)
    torch.save(other.state_dict(), tmp_path / "w.pth")
    with pytest.raises(TransferConfigError) as err:
        Backbone("small_cnn", 3, weights=str(tmp_path / "w.pth"))
    msg = str(err.value)
    assert "other shapes" in msg and "stem.0.weight" in msg and "\n" not in msg


def test_weights_as_pathlib_path(tmp_path):
    src = source_model()
    torch.save(src.state_dict(), tmp_path / "w.pth")
    assert_loaded(Backbone("small_cnn", 3, weights=tmp_path / "w.pth"), src.state_dict())


def test_channel_adaptation_with_several_first_convs(tmp_path):
    # timm's pretrained_cfg["first_conv"] may be a tuple (RepVGG's two parallel stem convs): adapt both.
    src = randomized(timm.create_model("repvgg_a0", num_classes=0, in_chans=3))
    first = src.pretrained_cfg["first_conv"]
    assert isinstance(first, tuple) and len(first) == 2
    torch.save(src.state_dict(), tmp_path / "repvgg.pth")
    bb = Backbone("repvgg_a0", 1, weights=str(tmp_path / "repvgg.pth"))
    got = bb.model.state_dict()
    for name in first:
        w = src.state_dict()[f"{name}.weight"]
        assert torch.allclose(got[f"{name}.weight"], adapt_input_conv(1, w.clone(), base_chans=3))
    assert torch.equal(got["stages.0.0.conv_kxk.conv.weight"], src.state_dict()["stages.0.0.conv_kxk.conv.weight"])
