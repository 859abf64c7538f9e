"""Optimizer param groups as a pure function of the model (timm ``param_groups_layer_decay`` style).

:func:`param_groups` creates **every** group up front, frozen or not — one per backbone layer group, split
into decay / no-decay, plus the head and any strategy modules — so unfreezing later never adds a group:
LR schedulers (which index ``base_lrs`` by group) and checkpoint resume (which restores the optimizer state
group by group) keep working. Frozen parameters simply get no gradient; AdamW skips them.

Discriminative learning rates: backbone group ``i`` of ``n`` gets
``lr * backbone_lr_scale * layer_decay ** (n - i)``; the head (``layer_group == HEAD``) gets ``lr``.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from lit_transfer.compat import set_scheduler_last_lr

__all__ = ["HEAD", "param_groups", "prefer_fused_on_cpu", "scale_lr", "configure_optimizers"]

HEAD = -1  # ``layer_group`` of the head's param groups


def param_groups(model: nn.Module, lr: Optional[float] = None, backbone_lr_scale: float = 1.0,
                 layer_decay: float = 1.0) -> list[dict]:
    """All param groups: (backbone group × decay/no-decay) + head + extra trainable modules.

    Each group carries ``name``, ``layer_group`` (backbone index, or ``HEAD``), ``lr_scale`` and, when ``lr``
    is given, ``lr = lr * lr_scale``. Biases and norm weights (``ndim <= 1``) get ``weight_decay = 0``, and so
    does every group when the model's regularizer replaces weight decay (L2-SP: decay toward zero would pull
    the weights away from the transferred ones it keeps them near), whatever optimizer a config chose.
    """
    regularizer = getattr(model, "regularizer", None)
    decay_wd = 0.0 if getattr(regularizer, "replaces_weight_decay", False) else None
    n = len(model.backbone.groups)
    groups: list[dict] = []
    named = dict(model.named_parameters())
    assigned: set[str] = set()

    def add(name: str, layer_group: int, lr_scale: float, names: list[str]) -> None:
        decay = [k for k in names if named[k].ndim > 1]
        no_decay = [k for k in names if named[k].ndim <= 1]  # biases and norm weights: no weight decay
        for suffix, keys, wd in (("", decay, decay_wd), (".no_decay", no_decay, 0.0)):
            if not keys:
                continue
            group = {"params": [named[k] for k in keys], "name": name + suffix, "layer_group": layer_group,
                     "lr_scale": lr_scale}
            if lr is not None:
                group["lr"] = lr * lr_scale
            if wd is not None:
                group["weight_decay"] = wd
            groups.append(group)
            assigned.update(keys)

    for g in model.backbone.groups:
        scale = backbone_lr_scale * layer_decay ** (n - g.index)
        add(f"backbone.{g.index}.{g.name}", g.index, scale, [f"backbone.model.{p}" for p in g.param_names])
    add("head", HEAD, 1.0, [k for k in named if k.startswith("head.")])
    # Strategy modules with parameters of their own (a bottleneck, a domain discriminator, a second head) train
    # with the head's learning rate; permanently frozen ones (a teacher) are left out.
    extra = [k for k, p in named.items() if k not in assigned and p.requires_grad]
    if extra:
        add("extra", HEAD, 1.0, extra)
    return groups


def prefer_fused_on_cpu(optimizer: torch.optim.Optimizer) -> None:
    """Adam/AdamW on CPU: use the fused kernel unless the config chose ``foreach`` or ``fused`` itself.

    Off CUDA, PyTorch's default steps parameter by parameter in Python: for a small CNN that is ~15% of a
    training step; the fused CPU kernel does it ~5x faster, with the same update up to float rounding.
    """
    if not isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW)):
        return
    groups = optimizer.param_groups
    params = [p for g in groups for p in g["params"]]
    if not params or any(p.device.type != "cpu" or p.dtype not in (torch.float32, torch.float64) for p in params):
        return
    if all(g.get("fused") is None and g.get("foreach") is None and not g.get("differentiable") for g in groups):
        for g in groups:
            g["fused"] = True


def configure_optimizers(model, optimizer_factory, lr_scheduler_factory, lr: float, backbone_lr_scale: float,
                         layer_decay: float):
    """What ``LightningModule.configure_optimizers`` returns for these groups, factories and LR.

    ``lr`` replaces the optimizer's own ``lr`` argument in every group (times the group's ``lr_scale``).
    """
    optimizer = optimizer_factory(param_groups(model, lr, backbone_lr_scale, layer_decay))
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_scale"]
    prefer_fused_on_cpu(optimizer)
    if lr_scheduler_factory is None:
        return optimizer
    scheduler = lr_scheduler_factory(optimizer)
    if hasattr(scheduler, "set_total_steps") and getattr(scheduler, "total_steps", None) is None:
        scheduler.set_total_steps(model.trainer.estimated_stepping_batches)  # e.g. InverseDecayLR's p
    config = {"scheduler": scheduler, "interval": getattr(scheduler, "interval", "epoch")}
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        from lit_transfer.evaluation import selection_metric

        selection = getattr(model, "hparams", {}).get("selection", "auto")
        config["monitor"] = selection_metric(selection) if scheduler.mode == "max" else "val_loss"
    return {"optimizer": optimizer, "lr_scheduler": config}


def scale_lr(trainer, factor: float, layer_groups: Optional[set[int]] = None) -> None:
    """Multiply the learning rate of (some) param groups, schedulers included, e.g. for LP→FT.

    Chainable schedulers read ``group["lr"]``, closed-form ones ``base_lrs``/``initial_lr``: all three are
    scaled so every scheduler keeps its shape from the new level; ``get_last_lr()`` reports the new value.
    """
    if factor == 1.0:
        return
    for opt in trainer.optimizers:
        schedulers = [cfg.scheduler for cfg in trainer.lr_scheduler_configs
                      if getattr(cfg.scheduler, "optimizer", None) is opt]
        for i, group in enumerate(opt.param_groups):
            if layer_groups is not None and group.get("layer_group") not in layer_groups:
                continue
            group["lr"] *= factor
            if "initial_lr" in group:
                group["initial_lr"] *= factor
            for sched in schedulers:
                if hasattr(sched, "base_lrs"):
                    sched.base_lrs[i] *= factor
        for sched in schedulers:
            if hasattr(sched, "get_last_lr"):
                set_scheduler_last_lr(sched, [g["lr"] for g in opt.param_groups])
