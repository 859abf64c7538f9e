"""One test per private Lightning/torch member lit_transfer touches (all of them in lit_transfer.compat).

Each test fails when upstream renames, removes or changes the meaning of the member, so an upgrade breaks here,
loudly, instead of lit_transfer silently losing a speed-up or writing the wrong checkpoint.
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.strategies import DDPStrategy
from torch import nn

from conftest import REPO, make_dm, make_module, make_trainer
from jsonargparse import ArgumentParser

from lit_transfer import compat
from lit_transfer.compat import CompactHelpFormatter, first_sentence, short_class_names


def test_attached_trainer_is_none_before_attaching_and_the_trainer_after(tmp_path):
    module = L.LightningModule()
    assert compat.attached_trainer(module) is None
    with pytest.raises(RuntimeError):  # why the public property cannot be used on these paths
        module.trainer  # noqa: B018
    seen = []

    class Record(L.Callback):
        def on_train_start(self, trainer, pl_module):
            seen.append(compat.attached_trainer(pl_module) is trainer)

    make_trainer(tmp_path, max_epochs=1, limit_train_batches=1, limit_val_batches=0,
                 callbacks=[Record()]).fit(make_module(), make_dm())
    assert seen == [True]


def test_should_update_logs_follows_log_every_n_steps(tmp_path):
    seen, at_end = [], []

    class Record(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append(compat.should_update_logs(trainer))

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            at_end.append(compat.should_update_logs(trainer))  # where DivergenceGuard reads its flag

    make_trainer(tmp_path, max_epochs=1, limit_train_batches=6, limit_val_batches=0, log_every_n_steps=3,
                 callbacks=[Record()]).fit(make_module(), make_dm(target_shots=20))
    assert seen == [False, False, True, False, False, True]
    assert at_end == seen


def test_set_scheduler_last_lr_is_what_get_last_lr_reports():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    assert sched.get_last_lr() == [0.1]
    compat.set_scheduler_last_lr(sched, [0.02])
    assert sched.get_last_lr() == [0.02]
    opt.param_groups[0]["lr"] = 0.02
    opt.step()
    sched.step()  # a chainable scheduler continues from the rescaled LR
    assert sched.get_last_lr() == pytest.approx([0.01])


def test_is_compiled_flips_when_module_compile_runs():
    net = nn.Linear(2, 2)
    assert not compat.is_compiled(net)
    net.compile(backend="eager")
    assert compat.is_compiled(net)


def test_tensor_version_counts_in_place_changes():
    p = nn.Parameter(torch.zeros(3))
    v = compat.tensor_version(p)
    with torch.no_grad():
        p.add_(1.0)
    assert compat.tensor_version(p) > v
    v = compat.tensor_version(p)
    opt = torch.optim.SGD([p], lr=0.1)
    p.grad = torch.ones(3)
    opt.step()  # what invalidates a cached digest of a trained weight
    assert compat.tensor_version(p) > v
    v = compat.tensor_version(p)
    p.detach().clone()  # reading does not count
    assert compat.tensor_version(p) == v


def test_norm_and_dropout_bases_cover_every_variant():
    for cls in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm):
        assert issubclass(cls, compat.BATCH_NORM)
    for cls in (nn.BatchNorm2d, nn.InstanceNorm2d, nn.GroupNorm, nn.LayerNorm):
        assert issubclass(cls, compat.NORM_LAYERS)
    for cls in (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout):
        assert issubclass(cls, compat.DROPOUT)
    assert not issubclass(nn.Linear, compat.NORM_LAYERS + (compat.DROPOUT,))


def test_find_unused_parameters_reaches_the_ddp_kwargs():
    strategy = DDPStrategy()
    compat.find_unused_parameters(strategy)
    assert strategy._ddp_kwargs["find_unused_parameters"] is True


@pytest.mark.parametrize("name, params", [
    ("_save_last_checkpoint", ["self", "trainer", "monitor_candidates"]),
    ("_save_checkpoint", ["self", "trainer", "filepath"]),
    ("_should_skip_saving_checkpoint", ["self", "trainer"]),
    ("_should_save_on_train_epoch_end", ["self", "trainer"]),
    ("_monitor_candidates", ["self", "trainer"]),
])
def test_model_checkpoint_private_methods_keep_their_signature(name, params):
    """CheckpointHooks overrides or calls these; a renamed one would silently stop the override."""
    assert list(inspect.signature(getattr(ModelCheckpoint, name)).parameters) == params


def test_model_checkpoint_private_state_is_what_mark_saved_sets(tmp_path):
    """Lightning itself reads ``_last_global_step_saved`` to skip a second save at the same step and
    ``_last_checkpoint_saved`` for its state; mark_saved writes both."""
    ckpt = compat.CheckpointHooks(dirpath=str(tmp_path))
    assert hasattr(ckpt, "_last_global_step_saved") and hasattr(ckpt, "_last_checkpoint_saved")
    source = inspect.getsource(ModelCheckpoint)
    assert "self._last_global_step_saved" in source and "self._last_checkpoint_saved" in source

    class Step:
        global_step = 7

    ckpt.mark_saved(Step(), "x.ckpt")
    assert (ckpt._last_global_step_saved, ckpt._last_checkpoint_saved) == (7, "x.ckpt")


# ------------------------------------------------------------------------------------ the rule itself
PRIVATE_ACCESS = re.compile(r"(?<!self)(?<!cls)\.(_[a-z][a-z0-9_]*)\b")


def _private_touches(path: Path) -> list[str]:
    """``obj._name`` attribute accesses on anything but ``self``/``cls`` of the file's own classes."""
    out = []
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            base = node.value
            if isinstance(base, ast.Name) and base.id in ("self", "cls"):
                continue
            out.append(f"{path.relative_to(REPO)}:{node.lineno} .{node.attr}")
        if isinstance(node, ast.ImportFrom) and node.module and any(p.startswith("_") for p in node.module.split(".")):
            if not node.module.startswith(("lit_transfer", "__future__")):
                out.append(f"{path.relative_to(REPO)}:{node.lineno} from {node.module}")
    return out


MODEL_LAYER = ["module.py", "features.py", "checkpointing.py", "freezing.py", "param_groups.py", "evaluation.py",
               "callbacks", "strategies/schedule.py", "strategies/l2sp.py", "strategies/lr.py",
               "strategies/objective.py", "strategies/multitask.py", "strategies/distill.py", "strategies/lwf.py",
               "models/backbone.py", "models/weights.py", "models/heads.py"]


def test_no_private_member_outside_compat_in_the_model_layer():
    files = []
    for entry in MODEL_LAYER:
        p = REPO / "lit_transfer" / entry
        files += sorted(p.rglob("*.py")) if p.is_dir() else [p]
    touches = [t for f in files for t in _private_touches(f)]
    # our own objects' private helpers (a module attribute we set, e.g. ``model._x``) would show up here too:
    # keep the list empty by going through public names or compat.
    assert touches == []


# ------------------------------------------------------------------ argparse help formatter (overrides protected
# ``_get_help_string``) and the throttled progress bar (overrides ``TQDMProgressBar._should_update``)
def test_first_sentence_keeps_abbreviations_and_stops_at_paragraphs():
    assert first_sentence("A loss (e.g. L2SP). More text.") == "A loss (e.g. L2SP)."
    assert first_sentence("Uses ``x.y`` files.\n\nDetails.") == "Uses ``x.y`` files."
    assert first_sentence("no period at all") == "no period at all"


def test_known_subclasses_by_short_name_unless_two_share_it():
    text = "(type: X, known subclasses: a.b.LinearHead, c.Checkpoint, d.Checkpoint)"
    assert short_class_names(text) == "(type: X, known subclasses: LinearHead, c.Checkpoint, d.Checkpoint)"


def test_formatter_shortens_the_description_and_keeps_type_and_default():
    parser = ArgumentParser(prog="p", formatter_class=CompactHelpFormatter)
    parser.add_argument("--lr", type=float, default=0.1, help="Learning rate. A long second sentence here.")
    text = parser.format_help()
    assert "Learning rate. (type: float, default: 0.1)" in " ".join(text.split())
    assert "second sentence" not in text


def test_tqdm_bar_decides_redraws_in_should_update():
    """ThrottledProgressBar overrides ``TQDMProgressBar._should_update(current, total)``; the bar must call it."""
    from lightning.pytorch.callbacks import TQDMProgressBar

    assert list(inspect.signature(TQDMProgressBar._should_update).parameters) == ["self", "current", "total"]
    assert "self._should_update(" in inspect.getsource(TQDMProgressBar)


def test_help_formatter_hook_is_what_argparse_calls():
    """CompactHelpFormatter overrides argparse's protected ``_get_help_string(action)``."""
    import argparse

    assert list(inspect.signature(argparse.HelpFormatter._get_help_string).parameters) == ["self", "action"]
    assert "self._get_help_string(" in inspect.getsource(argparse.HelpFormatter)


@pytest.mark.parametrize("name", ["CIFAR10", "CIFAR100", "SVHN", "STL10"])
def test_torchvision_datasets_check_integrity_in_check_integrity(name):
    """``check_md5: false`` domains override torchvision's ``_check_integrity()`` (files exist, no md5)."""
    from torchvision import datasets

    cls = getattr(datasets, name)
    assert list(inspect.signature(cls._check_integrity).parameters) == ["self"]
    torchvision_classes = [k for k in cls.__mro__ if k.__module__.startswith("torchvision.datasets")]
    assert any("self._check_integrity()" in inspect.getsource(k) for k in torchvision_classes)


def test_no_private_member_outside_compat_anywhere_in_the_package():
    """The rule for the whole package (the model-layer test above names its files; this one every file)."""
    touches = [t for f in sorted((REPO / "lit_transfer").rglob("*.py")) if f.name != "compat.py"
               for t in _private_touches(f)]
    # os._exit is the documented way for a forked child to leave without running the parent's cleanup.
    assert [t for t in touches if not t.endswith("._exit")] == []
