"""Shared test set-up: offline everything, tiny models and data, helpers to train a few real steps."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

from pathlib import Path  # noqa: E402

import lightning as L  # noqa: E402
import pytest  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SHIFT = [{"name": "rotate", "degrees": 90}, {"name": "invert"}]


@pytest.fixture(autouse=True)
def _no_machine_state(tmp_path_factory, monkeypatch):
    """Tests never depend on what this machine happens to have: no system copy of Fashion-MNIST (tests write
    their own IDX files), and prepared datasets cached in a per-session folder, not the user's cache."""
    from lit_transfer.data import cache, packaged

    monkeypatch.setattr(packaged, "SYSTEM_DIRS", [])
    folder = tmp_path_factory.getbasetemp() / "domain_cache"
    monkeypatch.setattr(cache, "DOMAIN_CACHE", folder)
    monkeypatch.setenv("LIT_TRANSFER_DATA_CACHE", str(folder))  # spawned trials and stage processes too


@pytest.fixture
def repo() -> Path:
    return REPO


def make_dm(**kwargs):
    from lit_transfer.data import DomainPairDataModule, DomainSpec

    kwargs.setdefault("target", DomainSpec(shifts=SHIFT))
    kwargs.setdefault("target_shots", 5)
    kwargs.setdefault("batch_size", 16)
    return DomainPairDataModule(**kwargs)


def make_module(**kwargs):
    from lit_transfer.module import TransferClassifier

    kwargs.setdefault("backbone", "small_cnn_tiny")
    kwargs.setdefault("in_chans", 1)
    kwargs.setdefault("num_classes", 10)
    return TransferClassifier(**kwargs)


def make_trainer(root, max_epochs=2, callbacks=(), **kwargs) -> L.Trainer:
    from lit_transfer.checkpointing import Checkpoint

    kwargs.setdefault("logger", False)
    return L.Trainer(
        default_root_dir=str(root),
        max_epochs=max_epochs,
        accelerator="cpu",
        devices=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[*callbacks, Checkpoint(dirpath=str(Path(root) / "ckpt"), save_last=True, save_top_k=0)],
        **kwargs,
    )


def wandb_records(path: str, last: bytes, timeout: float = 30.0) -> bytes:
    """The bytes of an offline run's record file once ``last`` (written at the end of the run) is in it:
    W&B's service process writes the file asynchronously, after ``finish()`` returns."""
    import time

    deadline = time.time() + timeout
    while True:
        data = open(path, "rb").read()
        if last in data or time.time() > deadline:
            return data
        time.sleep(0.2)
