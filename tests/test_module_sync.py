"""The training step never waits for the device in steady state (issue 22).

Between two logging steps, a real ``lit-transfer fit`` (the CLI's trainer: logger, throttled progress bar,
checkpoint callback, divergence guard, the model's own callbacks) reads nothing from a tensor: no ``item()``,
``bool()``, ``float()``, ``tolist()``, ``.cpu()`` or ``.numpy()``, and no ``aten::_local_scalar_dense`` (what
every scalar read dispatches to, from Python or C++). On the CPU that is counted; under CUDA the same window
runs with ``torch.cuda.set_sync_debug_mode("error")``, which raises on any synchronising call.
"""

from __future__ import annotations

import traceback

import lightning as L
import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from conftest import REPO

LOG_EVERY = 25
READS = ("item", "__bool__", "__float__", "__int__", "__index__", "tolist", "cpu", "numpy")


def in_fused_cpu_optimizer(event) -> bool:
    """A scalar read inside torch's fused optimizer kernel for CPU parameters (``_fused_adamw_`` reads its step
    counter): the kernel only runs on CPU parameters, where nothing is a device. On CUDA the fused kernel reads
    the counter on the device, and non-fused optimizers keep it on the host (the CUDA variant checks that)."""
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith("aten::_fused_"):
            return True
        parent = parent.cpu_parent
    return False


class ReadCounter(L.Callback):
    """Counts device→host reads from the start of the step after one logging step to the start of the next."""

    def __init__(self, monkeypatch, cuda: bool):
        self.monkeypatch, self.cuda = monkeypatch, cuda
        self.active, self.window_steps, self.reads, self.scalar_ops = False, 0, [], -1
        self.optimizer_steps = 0
        self.prof = None

    def _patch(self):
        for name in READS:
            original = getattr(torch.Tensor, name)

            def counting(t, *args, __original=original, __name=name, **kwargs):
                if self.active:
                    self.reads.append(f"Tensor.{__name} at\n" + "".join(traceback.format_stack(limit=14)[:-1]))
                return __original(t, *args, **kwargs)

            self.monkeypatch.setattr(torch.Tensor, name, counting)

    def open(self):
        self._patch()
        self.prof = profile(activities=[ProfilerActivity.CPU])
        self.prof.start()
        if self.cuda:
            torch.cuda.set_sync_debug_mode("error")
        self.active = True

    def close(self):
        self.active = False
        if self.cuda:
            torch.cuda.set_sync_debug_mode("default")
        self.prof.stop()
        events = self.prof.events()
        self.optimizer_steps = sum(e.name.startswith("Optimizer.step#") for e in events)
        self.scalar_ops = sum(e.name == "aten::_local_scalar_dense" and not in_fused_cpu_optimizer(e)
                              for e in events)
        self.monkeypatch.undo()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == LOG_EVERY:  # the step after the first logging step (global step 25 logged)
            self.open()
        elif batch_idx == 2 * LOG_EVERY - 1:  # the next logging step starts: close the window before it
            self.close()
        if self.active:
            self.window_steps += 1


def fit_counting_reads(tmp_path, monkeypatch, *extra: str, cuda: bool = False) -> ReadCounter:
    from lit_transfer.checkpointing import Checkpoint
    from lit_transfer.cli import TransferCLI
    from lit_transfer.compat import ThrottledProgressBar
    from lit_transfer.convergence import ValidationCurve
    from lit_transfer.divergence import DivergenceGuard

    monkeypatch.delenv("LIT_TRANSFER_RUN_DIR", raising=False)
    args = ["--config", str(REPO / "configs/data/digits_shift.yaml"), "--config",
            str(REPO / "configs/model/small_cnn.yaml"), f"--run.root={tmp_path}", "--data.target_shots=null",
            "--data.batch_size=4", f"--trainer.log_every_n_steps={LOG_EVERY}", f"--trainer.max_steps={3 * LOG_EVERY}",
            "--trainer.limit_val_batches=0", "--seed_everything=0",
            "--trainer.enable_progress_bar=true",  # shown even when stdout is not a terminal: its reads count too
            *extra]
    if cuda:
        args.append("--trainer.accelerator=cuda")
    cli = TransferCLI(args=args, run=False)
    callbacks = cli.trainer.callbacks
    assert any(isinstance(c, ThrottledProgressBar) for c in callbacks)
    assert any(isinstance(c, Checkpoint) for c in callbacks) and cli.trainer.logger is not None
    # what `lit-transfer fit` adds (run=False has no subcommand), and the counter
    counter = ReadCounter(monkeypatch, cuda)
    callbacks += [ValidationCurve(), DivergenceGuard(), counter]
    # A redraw reads the shown values (allowed: read when shown); on a loaded machine the 30 s non-TTY interval
    # could fall inside the window, so this run's bar draws only at its first step and at epoch ends.
    next(c for c in callbacks if isinstance(c, ThrottledProgressBar)).min_interval = 1e9
    cli.trainer.fit(cli.model, cli.datamodule)
    assert cli.trainer.global_step == 3 * LOG_EVERY
    return counter


@pytest.mark.parametrize("strategy", [
    [],  # the default: cross-entropy fine-tuning
    ["--strategy", "l2sp"],  # a regulariser
    ["--strategy", "cdan_mcc", "--data.source.half=0", "--data.target.half=1"],  # loss terms, two streams
], ids=["finetune", "l2sp", "cdan_mcc"])
def test_no_device_to_host_read_between_logging_steps(tmp_path, monkeypatch, strategy):
    counter = fit_counting_reads(tmp_path, monkeypatch, *strategy)
    assert counter.window_steps >= 20 and counter.optimizer_steps == counter.window_steps
    assert counter.reads == [], "\n".join(counter.reads[:5])
    assert counter.scalar_ops == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the CUDA variant needs a GPU; the CPU one always runs")
def test_no_sync_between_logging_steps_under_cuda_sync_debug_mode(tmp_path, monkeypatch):
    counter = fit_counting_reads(tmp_path, monkeypatch, "--trainer.precision=bf16-mixed", cuda=True)
    assert counter.window_steps >= 20 and counter.reads == [] and counter.scalar_ops == 0


@pytest.mark.parametrize("cuda", [False, pytest.param(True, marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="the CUDA variant needs a GPU; the CPU one always runs"))])
def test_no_device_to_host_read_in_evaluation_batches(tmp_path, monkeypatch, cuda):
    from conftest import make_dm, make_module

    class EvalWindow(ReadCounter):
        batches = 0

        def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
            if batch_idx == 0 and dataloader_idx == 0:
                self.open()
            self.batches += 1

        def on_validation_epoch_end(self, trainer, pl_module):
            self.close()  # the epoch's metrics are read now: after every batch ran

    window = EvalWindow(monkeypatch, cuda=cuda)
    trainer = L.Trainer(default_root_dir=str(tmp_path), accelerator="cuda" if cuda else "cpu", devices=1,
                        logger=False, enable_checkpointing=False,
                        enable_model_summary=False, callbacks=[window])
    trainer.validate(make_module(), make_dm(eval_batch_size=8, target_shots=20), verbose=False)
    assert window.batches >= 20 and window.reads == [], "\n".join(window.reads[:5])
    assert window.scalar_ops == 0
    assert 0 <= float(trainer.callback_metrics["target/val_acc"]) <= 1
