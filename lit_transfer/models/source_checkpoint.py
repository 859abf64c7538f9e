"""A lit_transfer run's checkpoint as the run that starts from it uses it, read once.

When ``model.weights`` is a ``.ckpt`` file, the model reads it here, once, and hands the value to each part
that needs it: the backbone (its ``backbone.model.*`` weights), the frozen source head (its head's weights and
class count) and a distillation teacher (the whole network: backbone name, channels and head from the
checkpoint's hyper-parameters and weights).
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

from lit_transfer.errors import TransferConfigError
from lit_transfer.models.heads import CosineHead, Head, HeadCallable, LinearHead, MLPHead
from lit_transfer.models.weights import LIT_BACKBONE_PREFIX, read_checkpoint
from lit_transfer.plan.weights import File, Weights

__all__ = ["SourceCheckpoint"]


@dataclass(frozen=True)
class SourceCheckpoint:
    """The tensors (``state``) and ``hyper_parameters`` (``hparams``) of a ``.ckpt`` weights file."""

    path: Path
    state: Mapping[str, torch.Tensor] = field(repr=False)
    hparams: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def read(cls, weights: Weights) -> Optional["SourceCheckpoint"]:
        """The checkpoint ``weights`` names (a :class:`~lit_transfer.plan.weights.File` ending ``.ckpt``), else
        ``None``: other files are plain state dicts, read by the backbone alone."""
        if not (isinstance(weights, File) and weights.is_checkpoint):
            return None
        state, hparams = read_checkpoint(weights.path)
        return cls(weights.path, state, hparams)

    @property
    def is_run(self) -> bool:
        """Written by a lit_transfer run (its keys hold ``backbone.model.*``)."""
        return any(k.startswith(LIT_BACKBONE_PREFIX) for k in self.state)

    def source_head_state(self) -> Optional[tuple[dict[str, torch.Tensor], int]]:
        """``(head state_dict, num_classes)`` of the source head, else ``None``.

        A checkpoint that itself carries a ``source_head`` (a target run) passes that one on; otherwise its
        ``head`` is the source head (a source run).
        """
        if not self.is_run:
            return None
        for prefix in ("source_head.", "head."):
            sub = {k[len(prefix):]: v for k, v in self.state.items() if k.startswith(prefix)}
            matrices = [v for v in sub.values() if v.ndim == 2]
            if matrices:
                return sub, int(matrices[-1].shape[0])
        return None

    def network(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """``(constructor arguments, state)`` of the run's network: backbone and head, nothing else."""
        if "backbone" not in self.hparams or not self.is_run:
            raise TransferConfigError(
                f"{self.path} is not a lit_transfer run checkpoint (no hyper_parameters/backbone)")
        head, n = self.head()
        kwargs = {"backbone": self.hparams["backbone"], "weights": None, "num_classes": n,
                  "in_chans": self.hparams.get("in_chans", 3), "head": head}
        return kwargs, {k: v for k, v in self.state.items() if k.startswith(("backbone.", "head."))}

    def head(self) -> tuple[HeadCallable, int]:
        """The head class (with its arguments) and class count: as the hyper-parameters record it (a CLI run's
        ``head``: a class path, or ``{class_path, init_args}``), else read from the ``head.*`` weights."""
        recorded = self.hparams.get("head")
        if recorded is None:
            return _head_from_state(self.state)
        spec = {"class_path": recorded} if isinstance(recorded, str) else dict(recorded)
        module, _, name = str(spec.get("class_path", "")).rpartition(".")
        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError, ValueError) as err:
            raise TransferConfigError(f"{self.path} records head {spec.get('class_path')!r}, which cannot be "
                                      f"imported here ({err})") from err
        if not (isinstance(cls, type) and issubclass(cls, Head)):
            raise TransferConfigError(f"{self.path} records head {spec.get('class_path')!r}, not a Head class")
        return functools.partial(cls, **dict(spec.get("init_args") or {})), int(self.hparams["num_classes"])


def _head_from_state(state: Mapping[str, torch.Tensor]) -> tuple[HeadCallable, int]:
    """The head class (with its shape arguments) and class count of a checkpoint's ``head.*`` weights."""
    if "head.log_scale" in state and "head.weight" in state:
        return CosineHead, int(state["head.weight"].shape[0])
    if "head.fc.weight" not in state:
        raise TransferConfigError("the teacher checkpoint has no head (head.fc.weight / head.weight)")
    n = int(state["head.fc.weight"].shape[0])
    linears = sorted(int(k.split(".")[2]) for k in state if k.startswith("head.mlp.") and k.endswith(".weight")
                     and state[k].ndim == 2)
    if not linears:
        return LinearHead, n
    hidden = [int(state[f"head.mlp.{i}.weight"].shape[0]) for i in linears]
    norm = any(k.startswith("head.mlp.") and state[k].ndim == 1 and k.endswith(".weight") for k in state)
    return functools.partial(MLPHead, hidden=hidden, norm=norm), n
