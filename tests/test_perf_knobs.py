"""Performance knobs: channels_last and torch.compile match eager/contiguous, fused CPU optimizer, cheap logging."""

from __future__ import annotations

import functools

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from conftest import REPO, make_dm, make_module, make_trainer
from lit_transfer import compat


def _batch(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=g), torch.randint(0, 10, (n,), generator=g)


def _outputs_and_grads(module, x, y):
    module.train()
    module.zero_grad()
    logits = module(x)
    F.cross_entropy(logits, y).backward()
    grads = {k: p.grad.detach().clone() for k, p in module.named_parameters() if p.grad is not None}
    module.eval()
    with torch.no_grad():
        eval_logits = module(x)
    return logits.detach(), eval_logits, grads


def _pair(**kwargs):
    torch.manual_seed(0)
    ref = make_module()
    torch.manual_seed(0)
    other = make_module(**kwargs)
    other.load_state_dict(ref.state_dict())
    return ref, other


def test_channels_last_matches_contiguous():
    ref, cl = _pair(channels_last=True)
    conv = next(m for m in cl.backbone.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    x, y = _batch()
    assert cl.preprocess(x).is_contiguous(memory_format=torch.channels_last)
    a, b = _outputs_and_grads(ref, x, y), _outputs_and_grads(cl, x, y)
    torch.testing.assert_close(b[0], a[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(b[1], a[1], rtol=1e-5, atol=1e-5)
    assert b[2].keys() == a[2].keys()
    for k in a[2]:
        torch.testing.assert_close(b[2][k], a[2][k], rtol=1e-4, atol=1e-5, msg=k)


def test_channels_last_trains_through_the_trainer(tmp_path):
    L.seed_everything(0)
    module = make_module(channels_last=True)
    make_trainer(tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=1).fit(module, make_dm())
    assert all(torch.isfinite(p).all() for p in module.parameters())


def test_compile_matches_eager_with_a_fast_backend():
    # aot_eager runs dynamo's graph capture and AOT autograd without generating C++: seconds on a CPU.
    ref, compiled = _pair(compile=True, compile_options={"backend": "aot_eager"})
    compiled.configure_model()  # what Lightning calls at fit/validate/test start
    assert compat.is_compiled(compiled.backbone.model)
    compiled.configure_model()  # idempotent
    x, y = _batch()
    a, b = _outputs_and_grads(ref, x, y), _outputs_and_grads(compiled, x, y)
    for i in (0, 1):
        torch.testing.assert_close(b[i], a[i], rtol=1e-5, atol=1e-5)
    for k in a[2]:
        torch.testing.assert_close(b[2][k], a[2][k], rtol=1e-4, atol=1e-5, msg=k)
    # state_dict keys are unchanged by compiling (checkpoints stay loadable by an eager model)
    assert compiled.state_dict().keys() == ref.state_dict().keys()


class CountingBackend:
    """A ``torch.compile`` backend (public API: any callable) that counts the graphs dynamo compiles, and runs
    them eagerly."""

    def __init__(self):
        self.compilations = 0

    def __call__(self, gm, example_inputs):
        self.compilations += 1
        return gm.forward


def test_compile_compiles_once_per_phase_and_mode_not_per_epoch(tmp_path):
    from lit_transfer.strategies import FinetuningSchedule, Phase

    backend = CountingBackend()
    after_epoch = []

    class Record(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            after_epoch.append(backend.compilations)

    L.seed_everything(0)
    module = make_module(compile=True, compile_options={"backend": backend})
    # epochs 0-1: the first backbone group frozen; epochs 2-4: everything trains (freeze→unfreeze)
    schedule = FinetuningSchedule(phases=[Phase(epoch=0, frozen=1), Phase(epoch=2, frozen=0)])
    trainer = L.Trainer(default_root_dir=str(tmp_path), max_epochs=5, accelerator="cpu", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, callbacks=[schedule, Record()])
    trainer.fit(module, make_dm(target_shots=7))  # 70 images: batches of 16 and a last one of 6, validation
    assert compat.is_compiled(module.backbone.model)
    first_phase, second_phase = after_epoch[0], after_epoch[2] - after_epoch[1]
    assert 1 <= first_phase <= 3  # training and evaluation graphs (and a dynamic batch size), compiled once
    assert after_epoch[1] == after_epoch[0]  # no recompile in a later epoch of the same phase
    assert second_phase <= 2  # the unfrozen phase: its training and evaluation graphs, once
    assert after_epoch[4] == after_epoch[3] == after_epoch[2]  # and nothing more for the rest of the run
    compiled = backend.compilations
    trainer.validate(module, make_dm(target_shots=7), verbose=False)  # eval after fit: the module stays compiled
    trainer.validate(module, make_dm(target_shots=7), verbose=False)
    assert backend.compilations <= compiled + 1  # at most the eval graph under inference mode, once
    assert torch.isfinite(torch.cat([p.flatten() for p in module.parameters()])).all()


def test_compile_mode_is_passed_to_torch_compile(monkeypatch):
    seen = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: seen.append(kw))
    make_module(compile=True, compile_mode="max-autotune").configure_model()
    make_module(compile=True, compile_options={"backend": "aot_eager"}).configure_model()
    assert seen == [{"mode": "max-autotune"}, {"backend": "aot_eager"}]


def test_bad_compile_mode_is_one_clear_line():
    from lit_transfer.errors import TransferConfigError

    with pytest.raises(TransferConfigError, match="model.compile_mode must be one of default, reduce-overhead"):
        make_module(compile=True, compile_mode="fastest")
    with pytest.raises(TransferConfigError, match="set the compile mode once"):
        make_module(compile_mode="max-autotune", compile_options={"mode": "reduce-overhead"})


@pytest.mark.slow
def test_compile_with_inductor_matches_eager_in_eval():
    pytest.importorskip("torch._inductor")
    ref, compiled = _pair(compile=True)
    compiled.configure_model()
    ref.eval(), compiled.eval()
    x, _ = _batch()
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), ref(x), rtol=1e-4, atol=1e-4)


def test_fused_adamw_on_cpu_unless_the_config_chooses():
    module = make_module()
    opt = module.configure_optimizers()
    assert all(g["fused"] for g in opt.param_groups)
    for factory in (functools.partial(torch.optim.AdamW, foreach=False),
                    functools.partial(torch.optim.AdamW, fused=False),
                    functools.partial(torch.optim.SGD, lr=0.1)):
        opt = make_module(optimizer=factory).configure_optimizers()
        assert not any(g.get("fused") for g in opt.param_groups), factory


def test_fused_and_unfused_training_agree(tmp_path):
    def fit(factory):
        L.seed_everything(0)
        module = make_module(optimizer=factory)
        make_trainer(tmp_path / str(id(factory)), max_epochs=2).fit(module, make_dm())
        return module.state_dict()

    fused = fit(functools.partial(torch.optim.AdamW, weight_decay=0.01))
    plain = fit(functools.partial(torch.optim.AdamW, weight_decay=0.01, foreach=False))
    for k in fused:
        torch.testing.assert_close(fused[k], plain[k], rtol=1e-4, atol=1e-5, msg=k)


def test_step_values_are_recorded_on_logging_steps_only(tmp_path, monkeypatch):
    calls = []
    original = L.LightningModule.log

    def counting(self, name, value, *args, **kwargs):
        if name == "train/loss":
            calls.append(self.trainer.global_step)
        return original(self, name, value, *args, **kwargs)

    monkeypatch.setattr(L.LightningModule, "log", counting)
    from lightning.pytorch.loggers import CSVLogger

    module = make_module()
    trainer = make_trainer(tmp_path, max_epochs=1, log_every_n_steps=4, limit_val_batches=0,
                           logger=CSVLogger(str(tmp_path), name="logs"))
    trainer.fit(module, make_dm(target_shots=20))  # 200 images / batch 16 = 12 steps
    assert trainer.global_step == 12
    assert calls == [3, 7, 11]  # recorded on the steps Lightning writes to the logger (every 4th)
    import csv

    with open(tmp_path / "logs" / "version_0" / "metrics.csv") as f:
        steps = [int(row["step"]) for row in csv.DictReader(f) if row.get("train/loss")]
    assert steps == [3, 7, 11]  # what the logger received: unchanged by recording only on those steps


def test_cli_uses_the_throttled_progress_bar(tmp_path, monkeypatch):
    from lightning.pytorch.callbacks import ProgressBar

    from lit_transfer.cli import ThrottledProgressBar, TransferCLI

    monkeypatch.delenv("LIT_TRANSFER_RUN_DIR", raising=False)
    base = ["fit", "--config", str(REPO / "configs/data/digits_shift.yaml"), "--config",
            str(REPO / "configs/model/small_cnn.yaml"), f"--run.root={tmp_path}"]
    import sys

    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)  # a terminal: the throttled bar
    cli = TransferCLI(args=base[1:], run=False)
    bars = [c for c in cli.trainer.callbacks if isinstance(c, ProgressBar)]
    assert len(bars) == 1 and isinstance(bars[0], ThrottledProgressBar)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)  # a log file (sweep trial, CI): no bar at all
    monkeypatch.delenv("LIT_TRANSFER_RUN_DIR", raising=False)
    cli = TransferCLI(args=base[1:], run=False)
    assert not any(isinstance(c, ProgressBar) for c in cli.trainer.callbacks)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.delenv("LIT_TRANSFER_RUN_DIR", raising=False)
    cli = TransferCLI(args=[*base[1:], "--trainer.enable_progress_bar=false"], run=False)
    assert not any(isinstance(c, ProgressBar) for c in cli.trainer.callbacks)


def test_throttled_progress_bar_redraws_at_most_every_interval(monkeypatch):
    from lit_transfer.cli import ThrottledProgressBar

    now = [100.0]
    monkeypatch.setattr("lit_transfer.cli.time.monotonic", lambda: now[0])
    bar = ThrottledProgressBar(min_interval=0.5)
    assert bar._should_update(1, 100)  # first batch
    assert not bar._should_update(2, 100)
    now[0] += 0.6
    assert bar._should_update(3, 100)
    assert not bar._should_update(4, 100)
    assert bar._should_update(100, 100)  # the last batch of an epoch always draws
    bar.disable()
    assert not bar._should_update(100, 100)


def test_progress_bar_reads_the_training_loss_only_when_it_draws(tmp_path):
    from lit_transfer.cli import ThrottledProgressBar

    drawn = []

    class Bar(ThrottledProgressBar):
        def get_metrics(self, trainer, pl_module):
            metrics = super().get_metrics(trainer, pl_module)
            drawn.append(metrics)
            return metrics

    module = make_module()
    trainer = L.Trainer(default_root_dir=str(tmp_path), max_epochs=1, accelerator="cpu", logger=False,
                        enable_checkpointing=False, enable_model_summary=False, log_every_n_steps=2,
                        limit_val_batches=0, callbacks=[Bar(min_interval=1e9)])
    trainer.fit(module, make_dm(target_shots=20))  # 12 steps: drawn at the first and the last batch only
    assert len(drawn) == 2 and isinstance(drawn[-1]["train/loss"], float)
    # Lightning converts prog_bar values to numbers after every batch (a sync); train/loss is not one of them
    assert "train/loss" not in trainer.progress_bar_metrics and "train/loss" in trainer.callback_metrics


@pytest.mark.slow
def test_cli_fit_and_test_with_compile(tmp_path, monkeypatch):
    # `--model.compile=true` through the real CLI: a freeze→unfreeze schedule, validation every epoch, then the
    # test after fit (eval) and result.json; aot_eager keeps it to seconds on a CPU.
    import json

    from lit_transfer.cli import main

    monkeypatch.delenv("LIT_TRANSFER_RUN_DIR", raising=False)
    main(["fit", "--config", str(REPO / "configs/data/digits_shift.yaml"), "--config",
          str(REPO / "configs/model/small_cnn.yaml"), "--strategy", "freeze_unfreeze", "--trainer.max_epochs=3",
          "--trainer.enable_progress_bar=false", "--data.target_shots=5", "--model.compile=true",
          '--model.compile_options={"backend": "aot_eager"}', f"--run.root={tmp_path}"])
    (result,) = [json.loads(p.read_text()) for p in tmp_path.rglob("result.json")]
    assert result["status"] == "ok"
    assert 0 <= result["metrics"]["target/test_acc"] <= 1 and "source/test_acc" in result["metrics"]
