"""Every use of a private member of Lightning or torch, in one place.

Private names change without deprecation. Each touch here is one small named function (or, for
``ModelCheckpoint``, one overridden method) with the reason it exists, and ``tests/test_compat.py`` holds one
test per touch that fails as soon as upstream renames or reshapes the member, instead of lit_transfer silently
falling back to slower or wrong behaviour. Nothing outside this module may name a ``_private`` member of
Lightning, torch or timm.

Checked against lightning 2.6, torch 2.9-2.14, timm 1.0.
"""

from __future__ import annotations

import functools
import os
import re
import sys
import time
from typing import Any, Optional

from jsonargparse import DefaultHelpFormatter
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from torch import nn

__all__ = ["attached_trainer", "should_update_logs", "set_scheduler_last_lr", "is_compiled", "tensor_version",
           "NORM_LAYERS",
           "BATCH_NORM", "DROPOUT", "find_unused_parameters", "CheckpointHooks",
           "ThrottledProgressBar", "torchvision_files_only", "stl10_labelled_only", "CompactHelpFormatter", "first_sentence", "short_class_names"]


def attached_trainer(module) -> Optional[Any]:
    """The trainer a LightningModule is attached to, or ``None``.

    The public ``module.trainer`` raises outside a fit when the module was never attached (``fabric`` runs,
    unit tests calling hooks directly); the code paths that also run without a trainer need ``None`` instead.
    """
    return getattr(module, "_trainer", None)


def should_update_logs(trainer) -> bool:
    """Whether this training step is one Lightning hands to the loggers (every ``log_every_n_steps``).

    Lightning decides it in its private logger connector; ``TransferClassifier.log`` skips recording step-only
    values on other steps (about a millisecond a call: more than a small model's whole CPU step).
    """
    connector = trainer._logger_connector
    return bool(connector.should_update_logs)


def set_scheduler_last_lr(scheduler, lrs: list[float]) -> None:
    """Set what ``scheduler.get_last_lr()`` reports after the group LRs were changed outside ``step()``.

    torch keeps it in ``_last_lr``; learning-rate monitors and chainable schedulers read it, so an LR rescaled
    by a fine-tuning phase (or re-based by ``InverseDecayLR.set_total_steps``) would otherwise be reported
    stale until the next ``step()``.
    """
    scheduler._last_lr = list(lrs)


def is_compiled(module: nn.Module) -> bool:
    """Whether ``module.compile()`` already ran (it sets ``_compiled_call_impl``; there is no public flag), so
    ``configure_model`` — called at every fit/validate/test start — compiles once."""
    return getattr(module, "_compiled_call_impl", None) is not None


def tensor_version(t) -> int:
    """A tensor's in-place modification counter (autograd's ``_version``; no public equivalent).

    The feature cache memoises weight digests per live tensor and re-hashes only when this changes: an
    optimizer step or ``load_state_dict`` bumps it, so a stale digest (hence stale cached features) is
    impossible without hashing every weight on every epoch.
    """
    return t._version


#: BatchNorm of every dimensionality (1d/2d/3d, SyncBatchNorm, lazy ones) share only the private base.
BATCH_NORM = nn.modules.batchnorm._BatchNorm
#: Normalisation layers whose running statistics / affine weights freezing must handle.
NORM_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)
#: Dropout of every dimensionality (Dropout, Dropout1d/2d/3d, AlphaDropout) share only the private base.
DROPOUT = nn.modules.dropout._DropoutNd


def find_unused_parameters(strategy) -> None:
    """Make a ``DDPStrategy`` wrap the model with ``find_unused_parameters=True``.

    A fine-tuning schedule unfreezes parameters after DDP wrapped the model; DDP all-reduces only the ones it
    saw trainable at wrap time, so the schedule wraps everything and lets DDP skip frozen ones. The strategy's
    constructor kwargs are private once the CLI has built it.
    """
    strategy._ddp_kwargs["find_unused_parameters"] = True


class CheckpointHooks(ModelCheckpoint):
    """``ModelCheckpoint`` with its private save steps re-exposed under public names.

    :class:`lit_transfer.checkpointing.Checkpoint` changes *when* ``last.ckpt`` is written and *how* (a hard
    link to a same-step best file). Lightning has no public hooks for either, so the private methods are
    overridden here, each only forwarding to a public method the subclass overrides.
    """

    # ----------------------------------------------------------------- read access to private state
    def skips_saving(self, trainer) -> bool:
        """Lightning's own reasons not to save now (sanity check, fast_dev_run, already saved this step)."""
        return self._should_skip_saving_checkpoint(trainer)

    def saves_on_train_epoch_end(self, trainer) -> bool:
        """Whether this callback's save points are train-epoch ends (else validation ends)."""
        return self._should_save_on_train_epoch_end(trainer)

    def monitor_candidates(self, trainer) -> dict:
        """The metrics a checkpoint file name and the top-k decision read."""
        return self._monitor_candidates(trainer)

    def mark_saved(self, trainer, filepath: str) -> None:
        """Record a save Lightning did not make itself (a linked ``last.ckpt``), so it is not repeated and
        resume metadata (``last_model_path``) stays right."""
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath

    # ------------------------------------------------------- overridden private steps → public hooks
    def _save_last_checkpoint(self, trainer, monitor_candidates) -> None:
        self.save_last_checkpoint(trainer, monitor_candidates)

    def _save_checkpoint(self, trainer, filepath: str) -> None:
        self.write_checkpoint(trainer, filepath)

    def save_last_checkpoint(self, trainer, monitor_candidates) -> None:
        """Write ``last.ckpt`` (Lightning's implementation)."""
        super()._save_last_checkpoint(trainer, monitor_candidates)

    def write_checkpoint(self, trainer, filepath: str) -> None:
        """Write one checkpoint file (Lightning's implementation)."""
        super()._save_checkpoint(trainer, filepath)


# ------------------------------------------------------------------ Lightning's progress bar
class ThrottledProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar, redrawn at most every ``min_interval`` seconds (and at the end of each epoch).

    The stock bar redraws after every batch: about a millisecond each time, more than a small model's whole
    training step on a CPU, and a flood of lines in a sweep trial's (non-TTY) log. Default interval: 0.5 s on
    a terminal, 30 s otherwise. ``TQDMProgressBar`` decides each redraw in its private ``_should_update``.
    """

    def __init__(self, min_interval: Optional[float] = None, process_position: int = 0, leave: bool = False,
                 shown: tuple[str, ...] = ("train/loss",)):
        super().__init__(refresh_rate=1, process_position=process_position, leave=leave)
        self.min_interval = min_interval
        self.last_draw = 0.0
        self.shown = tuple(shown)

    def get_metrics(self, trainer, pl_module) -> dict:
        """Lightning's bar values plus the logged values named in ``shown``, read (device→host) only here, when
        the bar redraws. Values logged with ``prog_bar=True`` are instead converted by Lightning after every
        batch, shown or not: a host–device sync per step."""
        metrics = super().get_metrics(trainer, pl_module)
        logged = trainer.callback_metrics
        for key in self.shown:
            value = logged.get(key)
            if value is not None and key not in metrics and getattr(value, "numel", lambda: 0)() == 1:
                metrics[key] = value.item()
        return metrics

    def _should_update(self, current: int, total) -> bool:
        if not self.is_enabled:
            return False
        if current == total:
            return True
        interval = self.min_interval if self.min_interval is not None else (0.5 if sys.stdout.isatty() else 30.0)
        now = time.monotonic()
        if now - self.last_draw < interval:
            return False
        self.last_draw = now
        return True


# ------------------------------------------------------------------ argparse's help formatter
# ``fit --help`` printed ~920 lines, most of them Lightning's multi-paragraph Trainer docstrings and fully
# qualified "known subclasses" lists. argparse's documented way to change help text is a formatter class that
# overrides its protected ``_get_help_string``; this one keeps each option's first sentence, its type and
# default, and lists known subclasses by class name (``--KEY.help NAME`` accepts those names).
_SUBCLASSES = re.compile(r"(known subclasses: )([^)]*)")
_SENTENCE_END = re.compile(r"(?<=[a-z0-9)`'\"])\.(\s|$)")
_ABBREVIATIONS = ("e.g", "i.e", "etc", "vs", "cf")  # a period after these does not end the sentence


def first_sentence(text: str) -> str:
    """The first sentence (or paragraph) of a help text, whitespace collapsed."""
    paragraph = re.split(r"\n\s*\n", text.strip(), maxsplit=1)[0]
    paragraph = " ".join(paragraph.split())
    for match in _SENTENCE_END.finditer(paragraph):
        if not paragraph[: match.start()].endswith(_ABBREVIATIONS):
            return paragraph[: match.start() + 1]
    return paragraph


def short_class_names(help_text: str) -> str:
    """``known subclasses: a.b.C, d.E`` → ``known subclasses: C, E`` (a name two classes share keeps its path)."""

    def shorten(match: re.Match) -> str:
        paths = [p.strip() for p in match.group(2).split(",")]
        names = [p.rsplit(".", 1)[-1] for p in paths]
        shown = [n if names.count(n) == 1 else p for p, n in zip(paths, names)]
        return match.group(1) + ", ".join(shown)

    return _SUBCLASSES.sub(shorten, help_text)


class CompactHelpFormatter(DefaultHelpFormatter):
    """jsonargparse's help, each option's description cut to its first sentence, subclasses by class name."""

    def _get_help_string(self, action) -> str:
        full = super()._get_help_string(action)
        description = action.help if isinstance(action.help, str) else ""
        if description and full.startswith(description) and "%(" not in description:
            full = first_sentence(description) + full[len(description):]
        return short_class_names(full)


# ------------------------------------------------------------------ torchvision datasets' integrity checks
# torchvision md5-checks the files of CIFAR/SVHN/STL-10 on every load (in the private ``_check_integrity()``).
# A domain with ``check_md5: false`` (re-packed copies, the tests' fixture files) loads through variants that
# only require the files to exist; by default the md5 checks stay on.
@functools.lru_cache(maxsize=None)
def stl10_labelled_only():
    """STL-10 without its 2.7 GB unlabeled split, which is never used: torchvision's check wants it on disk."""
    from torchvision import datasets
    from torchvision.datasets.utils import check_integrity

    class STL10LabelledOnly(datasets.STL10):
        check_md5 = True
        used = ("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin")

        def _check_integrity(self) -> bool:
            md5 = {name: digest for name, digest in self.train_list + self.test_list}
            return all(check_integrity(os.path.join(self.root, self.base_folder, name),
                                       md5[name] if self.check_md5 else None) for name in self.used)

    return STL10LabelledOnly


@functools.lru_cache(maxsize=None)
def torchvision_files_only() -> dict:
    """torchvision dataset class → its variant whose integrity check only requires the files to exist."""
    from torchvision import datasets

    def all_exist(*paths: str) -> bool:
        return all(os.path.isfile(p) for p in paths)

    class CIFAR10Files(datasets.CIFAR10):
        meta = {**datasets.CIFAR10.meta, "md5": None}  # check_integrity(path, None) only checks the file exists

        def _check_integrity(self) -> bool:
            files = [f for f, _ in self.train_list + self.test_list] + [self.meta["filename"]]
            return all_exist(*(os.path.join(self.root, self.base_folder, f) for f in files))

    class CIFAR100Files(datasets.CIFAR100):
        meta = {**datasets.CIFAR100.meta, "md5": None}
        _check_integrity = CIFAR10Files._check_integrity

    class SVHNFiles(datasets.SVHN):
        def _check_integrity(self) -> bool:
            return all_exist(os.path.join(self.root, self.filename))

    stl10 = stl10_labelled_only()

    class STL10Files(stl10):
        check_md5 = False

    return {datasets.CIFAR10: CIFAR10Files, datasets.CIFAR100: CIFAR100Files, datasets.SVHN: SVHNFiles,
            stl10: STL10Files}
