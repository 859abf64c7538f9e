"""Checkpoint files: written atomically straight to disk, ``last.ckpt`` linked only to a same-step best."""

from __future__ import annotations

import os

import lightning as L
import pytest
import torch

from lit_transfer.checkpointing import AtomicCheckpointIO, Checkpoint

SCRIPTED_VAL_ACC = [0.1, 0.3, 0.2, 0.4]  # new best at epochs 0, 1 and 3; none at epoch 2


class ScriptedModule(L.LightningModule):
    """A linear model whose validation accuracy follows a script, so we know which epochs improve."""

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Linear(4, 2)

    def training_step(self, batch, batch_idx):
        return self.net(batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.log("val_acc", SCRIPTED_VAL_ACC[self.current_epoch])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class FilesPerEpoch(L.Callback):
    """After the checkpoint callback has run: is last.ckpt the same file as best.ckpt, and which epochs do they hold."""

    def __init__(self, dirpath):
        self.dirpath, self.seen = dirpath, []

    def record(self):
        last, best = os.path.join(self.dirpath, "last.ckpt"), os.path.join(self.dirpath, "best.ckpt")
        self.seen.append((os.path.samefile(last, best), torch.load(last, weights_only=False)["epoch"],
                          torch.load(best, weights_only=False)["epoch"]))

    # The checkpoint callback saves at the end of each training epoch, after every other callback.
    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch > 0:
            self.record()

    def on_fit_end(self, trainer, pl_module):
        self.record()


def loader():
    data = torch.utils.data.TensorDataset(torch.randn(8, 4))
    return torch.utils.data.DataLoader(data, batch_size=4)


def test_last_is_linked_to_a_same_step_best_and_written_fresh_otherwise(tmp_path):
    dirpath = str(tmp_path / "ckpt")
    ckpt = Checkpoint(dirpath=dirpath, filename="best", monitor="val_acc", mode="max", save_last=True)
    files = FilesPerEpoch(dirpath)
    model = ScriptedModule()
    trainer = L.Trainer(default_root_dir=str(tmp_path), max_epochs=4, accelerator="cpu", logger=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        callbacks=[ckpt, files], plugins=[AtomicCheckpointIO()])
    trainer.fit(model, loader(), loader())
    # (last is best's file, epoch in last.ckpt, epoch in best.ckpt) after each epoch
    assert files.seen == [(True, 0, 0), (True, 1, 1), (False, 2, 1), (True, 3, 3)]
    last = torch.load(os.path.join(dirpath, "last.ckpt"), weights_only=False)
    assert all(torch.equal(last["state_dict"][k], v) for k, v in model.state_dict().items())
    assert ckpt.last_model_path.endswith("last.ckpt") and ckpt.best_model_path.endswith("best.ckpt")
    assert sorted(os.listdir(dirpath)) == ["best.ckpt", "last.ckpt"]  # no temporary files left

    # A resumed run (from the linked file) continues from the right epoch and keeps the best score.
    resumed = Checkpoint(dirpath=dirpath, filename="best", monitor="val_acc", mode="max", save_last=True)
    trainer = L.Trainer(default_root_dir=str(tmp_path), max_epochs=4, accelerator="cpu", logger=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        callbacks=[resumed], plugins=[AtomicCheckpointIO()])
    trainer.fit(ScriptedModule(), loader(), loader(), ckpt_path=os.path.join(dirpath, "last.ckpt"))
    assert trainer.current_epoch == 4 and float(resumed.best_model_score) == pytest.approx(0.4)


class LastPerEpoch(L.Callback):
    def __init__(self, dirpath):
        self.path, self.seen = os.path.join(dirpath, "last.ckpt"), []

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch > 0:
            self.seen.append(torch.load(self.path, weights_only=False)["epoch"])


@pytest.mark.parametrize("top_k", [0, 1])
def test_last_checkpoint_is_written_at_every_epoch_end(tmp_path, top_k):
    """Lightning 2.6 alone: with top_k=1 last.ckpt stays at the best epoch (1) after epoch 2; with top_k=0
    there is no last.ckpt until fit ends. A crashed run could not resume from its last epoch."""
    dirpath = str(tmp_path / "ckpt")
    ckpt = Checkpoint(dirpath=dirpath, filename="best", monitor="val_acc" if top_k else None, mode="max",
                      save_top_k=top_k, save_last=True)
    seen = LastPerEpoch(dirpath)
    trainer = L.Trainer(default_root_dir=str(tmp_path), max_epochs=4, accelerator="cpu", logger=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        callbacks=[ckpt, seen])
    trainer.fit(ScriptedModule(), loader(), loader())
    assert seen.seen == [0, 1, 2]


def test_atomic_save_writes_the_file_and_a_failed_save_keeps_the_old_one(tmp_path):
    io = AtomicCheckpointIO()
    path = tmp_path / "sub" / "model.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}}, path)
    assert torch.equal(io.load_checkpoint(path)["state_dict"]["w"], torch.ones(3))
    with pytest.raises(Exception):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "bad": lambda: None}, path)  # unpicklable
    assert torch.equal(io.load_checkpoint(path)["state_dict"]["w"], torch.ones(3))
    assert os.listdir(path.parent) == ["model.ckpt"]


def test_cli_trainer_uses_the_linking_checkpoint_and_atomic_io(repo, tmp_path):
    from lit_transfer.cli import TransferCLI

    cli = TransferCLI(args=["--config", str(repo / "configs/data/digits_shift.yaml"), "--config",
                            str(repo / "configs/model/small_cnn.yaml"), f"--run.root={tmp_path}"], run=False)
    assert isinstance(cli.trainer.checkpoint_callback, Checkpoint)
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)


@pytest.mark.parametrize("crc32", [None, True, False], ids=["default", "on", "opt-out"])
def test_crc32_is_written_by_default_and_opt_out_is_explicit(tmp_path, crc32):
    """CRC32 on by default (zip tools can verify the archive); ``crc32=False`` skips it. torch.load checks
    neither way, which is why the opt-out exists at all."""
    import zipfile

    path = tmp_path / "model.ckpt"
    weights = torch.arange(1000, dtype=torch.float32)
    io = AtomicCheckpointIO() if crc32 is None else AtomicCheckpointIO(crc32=crc32)
    io.save_checkpoint({"w": weights}, path)
    if crc32 is None:
        assert io.crc32 is True  # on unless a config opts out
    crc32 = io.crc32
    assert torch.equal(torch.load(path)["w"], weights)
    with zipfile.ZipFile(path) as archive:  # testzip: the first entry whose CRC does not match, or None
        assert (archive.testzip() is None) == crc32
        record = next(i for i in archive.infolist() if i.filename.endswith("data/0"))
    # Why skipping costs nothing: torch.load reads a corrupted tensor record without any error either way.
    data = bytearray(path.read_bytes())
    data[record.header_offset + 30 + len(record.filename.encode()) + len(record.extra) + 400] ^= 0xFF
    path.write_bytes(bytes(data))
    assert not torch.equal(torch.load(path)["w"], weights)
