"""Pluggable classification heads. A head knows only its input width and its number of classes.

Select one from config with ``class_path``; the module calls it with ``(in_features, num_classes)``::

    model:
      head:
        class_path: lit_transfer.models.MLPHead
        init_args: {hidden: [256], dropout: 0.2}
"""

from __future__ import annotations

import logging
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Head", "LinearHead", "MLPHead", "CosineHead", "HeadCallable", "make_bottleneck", "rebuild_source_head"]

log = logging.getLogger(__name__)


class Head(nn.Module):
    """Base class: maps ``[B, in_features]`` embeddings to ``[B, num_classes]`` logits."""

    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.in_features = in_features
        self.num_classes = num_classes


class LinearHead(Head):
    """``W z + b``: the classic transfer head (feature extraction / linear probe)."""

    def __init__(self, in_features: int, num_classes: int, dropout: float = 0.0):
        super().__init__(in_features, num_classes)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(z))


class MLPHead(Head):
    """Hidden layers (Linear → norm → GELU → dropout) before the classifier."""

    def __init__(
        self, in_features: int, num_classes: int, hidden: Sequence[int] = (256,), dropout: float = 0.0, norm: bool = True
    ):
        super().__init__(in_features, num_classes)
        layers: list[nn.Module] = []
        prev = in_features
        for width in hidden:
            layers += [nn.Linear(prev, width), nn.LayerNorm(width) if norm else nn.Identity(), nn.GELU(), nn.Dropout(dropout)]
            prev = width
        self.mlp = nn.Sequential(*layers)
        self.fc = nn.Linear(prev, num_classes)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.fc(self.mlp(z))


class CosineHead(Head):
    """Cosine classifier: ``s · cos(w_c, z)`` with normalised weights and features and a learnable scale.

    Popular for few-shot transfer: logits do not depend on feature norms, which shift between domains.
    """

    def __init__(self, in_features: int, num_classes: int, scale: float = 10.0, learn_scale: bool = True):
        super().__init__(in_features, num_classes)
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)
        # Learn log(scale) so the scale stays positive.
        self.log_scale = nn.Parameter(torch.tensor(float(scale)).log(), requires_grad=learn_scale)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.log_scale.exp() * F.linear(F.normalize(z, dim=-1), F.normalize(self.weight, dim=-1))


# What the CLI accepts for ``model.head``: a Head class whose first two arguments are given by the module.
HeadCallable = Callable[[int, int], Head]


def make_bottleneck(in_features: int, width: int) -> nn.Module:
    """Linear → BatchNorm → ReLU between the pooled features and the head (DANN/CDAN/MCC use 256)."""
    return nn.Sequential(nn.Linear(in_features, int(width)), nn.BatchNorm1d(int(width)), nn.ReLU())


def rebuild_source_head(checkpoint, head_factory, in_features: int) -> Optional[tuple[nn.Module, int]]:
    """``(frozen source head, num_classes)`` rebuilt from a lit_transfer checkpoint's head
    (:class:`~lit_transfer.models.source_checkpoint.SourceCheckpoint`), else ``None`` (no checkpoint, not a
    run's, or a head this model's head class cannot load: then no forgetting metrics)."""
    found = None if checkpoint is None else checkpoint.source_head_state()
    if found is None:
        return None
    state, n = found
    try:
        head = head_factory(in_features, n)
        head.load_state_dict(state)
    except (RuntimeError, TypeError, ValueError) as err:
        log.warning("cannot rebuild the source head of %s with this model's head (%s); no forgetting metrics",
                    checkpoint.path, err)
        return None
    return head.requires_grad_(False), n
