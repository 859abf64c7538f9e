"""A small CNN registered with timm, for small images and fast tests.

It honours timm's model contract (``forward_features``, ``forward_head``, ``group_matcher``,
``reset_classifier``, ``pretrained_cfg``), so everything in lit_transfer builds it the same way as any
other backbone: ``timm.create_model("small_cnn", num_classes=0, in_chans=1)``.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from timm.layers import SelectAdaptivePool2d
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

__all__ = ["SmallCNN"]


def _conv_bn_act(in_chs: int, out_chs: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_chs, out_chs, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_chs),
        nn.ReLU(inplace=True),
    )


class SmallCNN(nn.Module):
    """Stem + ``len(widths)`` stages (each halves the resolution) + global pool + linear classifier."""

    def __init__(
        self,
        num_classes: int = 10,
        in_chans: int = 3,
        widths: Sequence[int] = (32, 64, 128),
        stem_width: int = 16,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        **kwargs,  # timm passes pretrained_cfg-related kwargs through build_model_with_cfg
    ):
        super().__init__()
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.grad_checkpointing = False
        self.stem = _conv_bn_act(in_chans, stem_width)
        stages, prev = [], stem_width
        for width in widths:
            stages.append(nn.Sequential(_conv_bn_act(prev, width, stride=2), _conv_bn_act(width, width)))
            prev = width
        self.stages = nn.Sequential(*stages)
        self.num_features = self.head_hidden_size = prev
        self.feature_info = [dict(num_chs=stem_width, reduction=1, module="stem.2")] + [
            dict(num_chs=w, reduction=2 ** (i + 1), module=f"stages.{i}") for i, w in enumerate(widths)
        ]
        self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=True)
        self.head_drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(prev, num_classes) if num_classes > 0 else nn.Identity()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        # Layer groups from input to output: the stem, then one group per stage.
        return dict(stem=r"^stem", blocks=r"^stages\.(\d+)")

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=True)
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(self.global_pool(x))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _cfg(**kwargs) -> dict:
    return {
        "num_classes": 10,
        "input_size": (3, 32, 32),
        "pool_size": None,
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "mean": (0.5, 0.5, 0.5),
        "std": (0.5, 0.5, 0.5),
        "first_conv": "stem.0",
        "classifier": "fc",
        **kwargs,
    }


# No hub weights: the small CNN is trained by lit_transfer's own source stage.
default_cfgs = generate_default_cfgs({"small_cnn.untrained": _cfg(), "small_cnn_tiny.untrained": _cfg()})


def _create(variant: str, pretrained: bool, **kwargs) -> SmallCNN:
    # One feature map per feature_info entry (stem + stages); timm's default out_indices (0..4) assume 5.
    num_features = len(kwargs.get("widths", (32, 64, 128))) + 1
    feature_cfg = dict(flatten_sequential=True, out_indices=tuple(range(num_features)))
    return build_model_with_cfg(SmallCNN, variant, pretrained, feature_cfg=feature_cfg, **kwargs)


@register_model
def small_cnn(pretrained: bool = False, **kwargs) -> SmallCNN:
    """~0.3M parameters: stem 16, stages 32/64/128."""
    return _create("small_cnn", pretrained, **kwargs)


@register_model
def small_cnn_tiny(pretrained: bool = False, **kwargs) -> SmallCNN:
    """~20k parameters: a smaller student for distillation tests."""
    kwargs.setdefault("widths", (16, 32))
    kwargs.setdefault("stem_width", 8)
    return _create("small_cnn_tiny", pretrained, **kwargs)
