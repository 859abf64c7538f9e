"""The network parts a :class:`~lit_transfer.module.TransferClassifier` is made of, built from its config values.

``model.weights`` is parsed once (:func:`~lit_transfer.plan.weights.parse_weights`); a lit_transfer ``.ckpt`` is
read once (:class:`~lit_transfer.models.source_checkpoint.SourceCheckpoint`) and every part that starts from it
(the backbone, the frozen source head) is built from that one read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from lit_transfer.models.backbone import Backbone
from lit_transfer.models.heads import HeadCallable, make_bottleneck, rebuild_source_head
from lit_transfer.models.source_checkpoint import SourceCheckpoint
from lit_transfer.plan.weights import parse_weights

__all__ = ["Network", "build_network"]


@dataclass
class Network:
    """Backbone, optional bottleneck, head and the checkpoint's (frozen) source head with its class count;
    ``checkpoint``: the source checkpoint they were built from, for objectives that need more of it."""

    backbone: Backbone
    bottleneck: Optional[nn.Module]
    head: nn.Module
    source_head: Optional[nn.Module]
    source_num_classes: Optional[int]
    checkpoint: Optional[SourceCheckpoint]


def build_network(backbone: str, weights, in_chans: int, head: HeadCallable, num_classes: int,
                  bottleneck: Optional[int], channels_last: bool) -> Network:
    """The parts, built in a fixed order (backbone, bottleneck, head, source head: the random draws of their
    initialisations are the same from run to run)."""
    start = parse_weights(weights)
    checkpoint = SourceCheckpoint.read(start)
    net = Backbone(backbone, in_chans=in_chans, weights=start, state=None if checkpoint is None else checkpoint.state)
    if channels_last:
        net.to(memory_format=torch.channels_last)
    neck = make_bottleneck(net.out_features, bottleneck) if bottleneck else None
    dim = bottleneck or net.out_features
    top = head(dim, num_classes)
    source_head, source_num_classes = rebuild_source_head(checkpoint, head, dim) or (None, None)
    return Network(net, neck, top, source_head, source_num_classes, checkpoint)
