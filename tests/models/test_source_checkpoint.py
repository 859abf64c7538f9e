"""A source ``.ckpt`` read once for every part built from it; the head a checkpoint records wins over guessing."""

from __future__ import annotations

import functools

import torch

from conftest import make_module
from lit_transfer.models.heads import MLPHead
from lit_transfer.models.source_checkpoint import SourceCheckpoint
from lit_transfer.plan.weights import File, Hub, Random
from lit_transfer.strategies import Distill


def save_run(path, module, **hparams) -> None:
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": {**dict(module.hparams), **hparams}}, path)


def test_only_checkpoint_files_are_source_checkpoints(tmp_path):
    assert SourceCheckpoint.read(Random()) is None and SourceCheckpoint.read(Hub()) is None
    torch.save({}, tmp_path / "w.pth")
    assert SourceCheckpoint.read(File(tmp_path / "w.pth")) is None


def test_a_recorded_head_is_used_rather_than_guessed_from_key_names(tmp_path):
    module = make_module(head=functools.partial(MLPHead, hidden=[8], dropout=0.3, norm=False))
    assert "head" not in module.hparams  # a class from Python is not a plain value: not recorded
    save_run(tmp_path / "guessed.ckpt", module)
    head, n = SourceCheckpoint.read(File(tmp_path / "guessed.ckpt")).head()
    assert n == 10 and head.keywords == {"hidden": [8], "norm": False}  # from the weights: no dropout known
    recorded = {"class_path": "lit_transfer.models.MLPHead", "init_args": {"hidden": [8], "dropout": 0.3, "norm": False}}
    save_run(tmp_path / "recorded.ckpt", module, head=recorded)
    head, n = SourceCheckpoint.read(File(tmp_path / "recorded.ckpt")).head()
    assert n == 10 and head.func is MLPHead and head.keywords == recorded["init_args"]
    teacher = make_module(weights=str(tmp_path / "recorded.ckpt"), objective=Distill()).objective.teacher.module
    assert teacher.head.mlp[3].p == 0.3
    x = torch.randint(0, 255, (4, 1, 28, 28), dtype=torch.uint8)
    torch.testing.assert_close(teacher.eval()(x), module.eval()(x))


def test_the_source_checkpoint_is_read_once_for_backbone_source_head_and_teacher(tmp_path, monkeypatch):
    save_run(tmp_path / "source.ckpt", make_module())
    reads = []
    load = torch.load

    def counting_load(f, *args, **kwargs):
        reads.append(str(f))
        return load(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counting_load)
    module = make_module(weights=str(tmp_path / "source.ckpt"), objective=Distill())
    assert reads == [str(tmp_path / "source.ckpt")]
    assert module.source_head is not None and module.objective.teacher is not None
    assert not hasattr(module, "source_checkpoint")  # its tensors are in the parts; the file is not kept
