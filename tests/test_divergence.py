"""DivergenceGuard without a per-step sync: the first bad step is recorded on the device and read at check points."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch

from conftest import make_dm, make_module
from lit_transfer.divergence import DivergenceGuard, FirstBadStep
from lit_transfer.errors import TrainingDiverged


def test_a_diverging_fit_stops_at_the_next_logging_step_naming_the_first_bad_step(tmp_path):
    losses, stopped_at = {}, []

    class Record(L.Callback):  # runs before the guard: this test reads every loss, the guard does not
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses[trainer.global_step] = float(outputs["loss"])

        def on_exception(self, trainer, pl_module, exception):
            stopped_at.append(trainer.global_step)

    trainer = L.Trainer(default_root_dir=str(tmp_path), max_steps=60, log_every_n_steps=7, accelerator="cpu",
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, callbacks=[Record(), DivergenceGuard()])
    with pytest.raises(TrainingDiverged) as err:
        trainer.fit(make_module(lr=1e9), make_dm(target_shots=60, batch_size=8))  # 75 steps an epoch
    first = min(step for step, loss in losses.items() if not math.isfinite(loss))
    assert err.value.step == first and err.value.what == "loss" and err.value.epoch == 0
    assert str(err.value.loss) == str(losses[first])
    (stop,) = stopped_at
    assert stop % 7 == 0 and first <= stop < first + 7  # the first logging step at or after it


def test_first_bad_step_keeps_the_first_and_reads_nothing_until_asked(monkeypatch):
    record = FirstBadStep()
    reads = []
    for name in ("item", "__bool__", "__float__", "tolist", "cpu"):
        original = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name,
                            lambda t, *a, __o=original, __n=name, **k: (reads.append(__n), __o(t, *a, **k))[1])
    for step, loss in enumerate([1.0, 2.0, float("-inf"), float("nan"), 3.0], start=1):
        record.update(torch.tensor(loss), step)
    record.update(torch.tensor([1.0, float("nan")]), 6)  # a per-example loss vector
    assert reads == []
    monkeypatch.undo()
    assert record.read() == (3, float("-inf"))
    assert FirstBadStep().read() is None
