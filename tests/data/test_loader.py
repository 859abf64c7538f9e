"""The data path to the device (issue 22): uint8 batches on the host, pinned on CUDA, prefetched on request,
normalised by the model on its device."""

from __future__ import annotations

from types import SimpleNamespace

import lightning as L
import pytest
import torch

from conftest import make_dm, make_module
from lit_transfer.data.loader import InMemoryLoader


def _loader(n=10, **kwargs):
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    kwargs.setdefault("batch_size", 3)
    kwargs.setdefault("shuffle", True)
    return InMemoryLoader(images, torch.arange(n), **kwargs)


def test_batches_stay_uint8_on_the_host_without_an_accelerator():
    dm = make_dm()
    dm.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cpu")), global_rank=0,
                                 world_size=1)
    assert dm.transfer_options() == {"pin_memory": False, "device": None}
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    assert x.dtype == torch.uint8 and x.device.type == "cpu" and not x.is_pinned()
    assert y.dtype == torch.int64


def test_pinned_only_on_cuda_and_prefetched_only_when_asked():
    def options(device, prefetch):
        dm = make_dm(prefetch=prefetch)
        dm.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device(device)))
        return dm.transfer_options()

    assert options("cuda:1", False) == {"pin_memory": True, "device": None}
    assert options("cuda:1", True) == {"pin_memory": True, "device": torch.device("cuda:1")}
    assert options("cpu", True) == {"pin_memory": False, "device": None}  # nothing to overlap on a CPU
    assert make_dm().transfer_options() == {"pin_memory": False, "device": None}  # no trainer: plain batches


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_prefetch_moves_the_same_batches_one_ahead(device):
    plain = list(_loader())
    prefetching = _loader(device=device)
    pulled = []
    batches = prefetching._batches

    def counting():
        for batch in batches():
            pulled.append(len(pulled))
            yield batch

    prefetching._batches = counting
    got = []
    for k, batch in enumerate(prefetching):
        assert len(pulled) == min(k + 2, len(plain))  # batch k+1 was issued before batch k was handed out
        got.append(batch)
    assert len(got) == len(plain)
    for (x, y), (px, py) in zip(got, plain):
        assert x.device.type == device and x.dtype == torch.uint8 and x.shape == px.shape
        if device == "cpu":
            assert torch.equal(x, px) and torch.equal(y, py)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned memory needs CUDA")
def test_pinned_batches_match_and_transfer_on_cuda():
    plain = list(_loader())
    for (x, y), (px, py) in zip(_loader(pin_memory=True), plain):
        assert x.is_pinned() and y.is_pinned() and torch.equal(x, px) and torch.equal(y, py)
    for (x, y), (px, py) in zip(_loader(pin_memory=True, device="cuda"), plain):
        assert x.is_cuda and torch.equal(x.cpu(), px) and torch.equal(y.cpu(), py)


def test_the_model_normalises_uint8_batches_on_its_device(tmp_path):
    seen = []

    class Record(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append(batch[0].dtype)

    module = make_module(channels_last=True)
    L.Trainer(default_root_dir=str(tmp_path), max_steps=2, accelerator="cpu", logger=False,
              enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
              limit_val_batches=0, callbacks=[Record()]).fit(module, make_dm())
    assert seen == [torch.uint8, torch.uint8]  # what reaches the device is the uint8 batch
    x = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8)
    expected = (x.float() / 255 - module.mean) / module.std
    out = module.preprocess(x)
    assert out.dtype == torch.float32 and out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
