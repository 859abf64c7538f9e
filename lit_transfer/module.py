"""``TransferClassifier``: a timm backbone + a pluggable head, and the one training path every strategy uses.

Strategies never build their own optimizers. The module creates **every** param group up front (one per
backbone layer group, split by weight decay, plus the head), frozen or not, so unfreezing later never adds a
group: LR schedulers and checkpoint resume keep working. Strategies only flip ``requires_grad`` through
:meth:`TransferClassifier.set_frozen` and rescale group learning rates through :meth:`scale_lr`.
"""

from __future__ import annotations

import logging
from typing import Optional

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from lit_transfer.models.backbone import Backbone
from lit_transfer.models.heads import HeadCallable, LinearHead

__all__ = ["TransferClassifier"]

log = logging.getLogger(__name__)

HEAD = -1  # ``layer_group`` of the head's param groups
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)


def _default_optimizer(params) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, weight_decay=0.01)


class TransferClassifier(LightningModule):
    """Backbone + head trained with cross-entropy; metrics per split and per domain.

    Args:
        backbone: a timm model name (``small_cnn``, ``resnet18``, ``resnet50.a1_in1k``, ...).
        weights: ``None`` (random init: training from scratch), ``"pretrained"`` (timm hub), a local
            ``.safetensors``/``.pth`` file, or a lit_transfer ``.ckpt`` (e.g. a source run's ``last.ckpt``).
        num_classes, in_chans: linked from the data module by the CLI.
        head: a :class:`~lit_transfer.models.heads.Head` class; called with ``(in_features, num_classes)``.
        optimizer, lr_scheduler: callables given the module's param groups (LightningCLI style).
        lr: base learning rate of the head. Backbone group ``i`` of ``n`` gets
            ``lr * backbone_lr_scale * layer_decay ** (n - i)`` (discriminative learning rates).
        freeze_bn_stats: frozen groups keep their BatchNorm running statistics (eval mode) too.
        regularizer: a loss module added to the task loss (e.g. :class:`~lit_transfer.strategies.L2SP`).
        label_smoothing: cross-entropy label smoothing.
    """

    def __init__(
        self,
        backbone: str = "small_cnn",
        weights: Optional[str] = None,
        num_classes: int = 10,
        in_chans: int = 3,
        head: HeadCallable = LinearHead,
        optimizer: OptimizerCallable = _default_optimizer,
        lr_scheduler: Optional[LRSchedulerCallable] = None,
        lr: float = 1e-3,
        backbone_lr_scale: float = 1.0,
        layer_decay: float = 1.0,
        freeze_bn_stats: bool = True,
        regularizer: Optional[nn.Module] = None,
        label_smoothing: float = 0.0,
    ):
        super().__init__()
        weights = None if weights is None else str(weights)  # a Path would not load with weights_only=True
        # Only plain values go into checkpoints, so they load with torch.load(weights_only=True).
        self.save_hyperparameters(ignore=["head", "optimizer", "lr_scheduler", "regularizer"])
        self.backbone = Backbone(backbone, in_chans=in_chans, weights=weights)
        self.head = head(self.backbone.out_features, num_classes)
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self.num_classes = num_classes
        self.frozen_groups = 0
        mean, std = self._normalization(in_chans)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)
        self.regularizer = regularizer
        if regularizer is not None and hasattr(regularizer, "bind"):
            regularizer.bind(self)  # e.g. L2SP snapshots the transferred weights w0 here
        metrics = MetricCollection(
            {
                "acc": MulticlassAccuracy(num_classes, average="micro"),
                "f1": MulticlassF1Score(num_classes, average="macro"),
            },
            compute_groups=False,  # each metric is logged on its own; shared states would be copied each time
        )
        self.metrics = nn.ModuleDict(
            {f"{d}_{s}": metrics.clone() for d in ("target", "source") for s in ("val", "test")}
        )

    # ------------------------------------------------------------------ model
    def _normalization(self, in_chans: int) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.backbone.data_config
        mean, std = torch.tensor(cfg["mean"], dtype=torch.float32), torch.tensor(cfg["std"], dtype=torch.float32)
        if in_chans != len(mean):  # grayscale data on an RGB-pretrained model (or the reverse)
            mean, std = mean.mean().repeat(in_chans), std.mean().repeat(in_chans)
        return mean.view(1, -1, 1, 1), std.view(1, -1, 1, 1)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 images in [0, 255] (what the data module yields) → normalised float tensors."""
        if x.dtype == torch.uint8:
            x = x.float().div_(255.0)
        return (x - self.mean) / self.std

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.preprocess(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))

    # ------------------------------------------------------------- freezing
    @property
    def num_groups(self) -> int:
        return len(self.backbone.groups)

    def set_frozen(self, n: int) -> bool:
        """Freeze the first ``n`` backbone layer groups (from the input); the rest and the head train.

        Returns whether the trainable set changed. Frozen groups' norm layers also stop updating their
        running statistics (see :meth:`train`).
        """
        if not 0 <= n <= self.num_groups:
            raise ValueError(f"cannot freeze {n} groups: backbone '{self.backbone.name}' has {self.num_groups}")
        changed = n != self.frozen_groups
        for i in range(self.num_groups):
            for p in self.backbone.group_parameters(i):
                p.requires_grad_(i >= n)
        self.frozen_groups = n
        self.train(self.training)  # re-apply norm modes for the new frozen set
        if changed:
            self.log_param_counts(reason=f"frozen {n}/{self.num_groups} backbone groups")
        return changed

    def frozen_norm_modules(self) -> list[nn.Module]:
        mods = []
        for i in range(self.frozen_groups):
            mods += [m for m in self.backbone.group_modules(i) if isinstance(m, _NORMS)]
        return mods

    def train(self, mode: bool = True):
        # Lightning (and users) call .train() at the start of every epoch and after validation; a "frozen"
        # BatchNorm left in train mode keeps updating its running statistics, so re-apply eval here.
        super().train(mode)
        if mode and self.hparams.freeze_bn_stats:
            for m in self.frozen_norm_modules():
                m.eval()
        return self

    def param_counts(self) -> dict[str, int]:
        params = list(self.backbone.parameters()) + list(self.head.parameters())
        return {"trainable": sum(p.numel() for p in params if p.requires_grad), "total": sum(p.numel() for p in params)}

    def log_param_counts(self, reason: str = "") -> None:
        counts = self.param_counts()
        rank_zero_info(f"[lit_transfer] trainable params {counts['trainable']:,} / {counts['total']:,} {reason}".rstrip())
        trainer = self._trainer
        if trainer is not None and trainer.loggers:
            metrics = {f"params/{k}": float(v) for k, v in counts.items()}
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=trainer.global_step)

    def on_fit_start(self) -> None:
        self.log_param_counts(reason="at fit start")

    # ------------------------------------------------------------ optimizer
    def param_groups(self) -> list[dict]:
        """All param groups, frozen or not: (backbone group × decay/no-decay) + head + any extra modules."""
        n = self.num_groups
        hp = self.hparams
        groups: list[dict] = []
        named = dict(self.named_parameters())
        assigned: set[str] = set()

        def add(name: str, layer_group: int, lr_scale: float, names: list[str]) -> None:
            decay = [k for k in names if named[k].ndim > 1]
            no_decay = [k for k in names if named[k].ndim <= 1]  # biases and norm weights: no weight decay
            for suffix, keys, wd in (("", decay, None), (".no_decay", no_decay, 0.0)):
                if not keys:
                    continue
                group = {"params": [named[k] for k in keys], "name": name + suffix, "layer_group": layer_group,
                         "lr_scale": lr_scale}
                if wd is not None:
                    group["weight_decay"] = wd
                groups.append(group)
                assigned.update(keys)

        for g in self.backbone.groups:
            scale = hp.backbone_lr_scale * hp.layer_decay ** (n - g.index)
            add(f"backbone.{g.index}.{g.name}", g.index, scale, [f"backbone.model.{p}" for p in g.param_names])
        add("head", HEAD, 1.0, [k for k in named if k.startswith("head.")])
        # Strategy modules with parameters of their own (a domain discriminator, a second head) train with
        # the head's learning rate; permanently frozen ones (a teacher) are left out.
        extra = [k for k, p in named.items() if k not in assigned and p.requires_grad]
        if extra:
            add("extra", HEAD, 1.0, extra)
        return groups

    def configure_optimizers(self):
        groups = self.param_groups()
        optimizer = self.optimizer_factory(groups)
        for group in optimizer.param_groups:
            group["lr"] = self.hparams.lr * group["lr_scale"]
        if self.lr_scheduler_factory is None:
            return optimizer
        scheduler = self.lr_scheduler_factory(optimizer)
        config = {"scheduler": scheduler, "interval": "epoch"}
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            config["monitor"] = "val_acc" if scheduler.mode == "max" else "val_loss"
        return {"optimizer": optimizer, "lr_scheduler": config}

    def scale_lr(self, factor: float, layer_groups: Optional[set[int]] = None) -> None:
        """Multiply the learning rate of (some) param groups, schedulers included, e.g. for LP→FT.

        Chainable schedulers read ``group["lr"]``, closed-form ones ``base_lrs``/``initial_lr``: all three
        are scaled so every scheduler keeps its shape from the new level.
        """
        if factor == 1.0:
            return
        optimizers = self.trainer.optimizers
        for opt in optimizers:
            for i, group in enumerate(opt.param_groups):
                if layer_groups is not None and group.get("layer_group") not in layer_groups:
                    continue
                group["lr"] *= factor
                if "initial_lr" in group:
                    group["initial_lr"] *= factor
                for cfg in self.trainer.lr_scheduler_configs:
                    sched = cfg.scheduler
                    if getattr(sched, "optimizer", None) is opt and hasattr(sched, "base_lrs"):
                        sched.base_lrs[i] *= factor
                    if getattr(sched, "optimizer", None) is opt and hasattr(sched, "_last_lr"):
                        sched._last_lr[i] = group["lr"]

    # -------------------------------------------------------------- steps
    def _domain(self, kind: str, dataloader_idx: int) -> str:
        dm = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        names = getattr(dm, f"{kind}_domains", None) or ["target"]
        return names[dataloader_idx] if dataloader_idx < len(names) else f"domain{dataloader_idx}"

    def train_domain(self) -> str:
        dm = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        return getattr(dm, "train_on", "target")

    def task_loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y, label_smoothing=self.hparams.label_smoothing)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = self.task_loss(self(x), y)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False, batch_size=len(y))
        if self.regularizer is not None:
            reg = self.regularizer(self)
            self.log("train/reg", reg, on_step=True, on_epoch=False, batch_size=len(y))
            loss = loss + reg
        return loss

    def _eval_step(self, batch, split: str, dataloader_idx: int) -> None:
        x, y = batch
        logits = self(x)
        domain = self._domain(split, dataloader_idx)
        metrics = self.metrics[f"{domain}_{split}"]
        metrics.update(logits, y)
        loss = F.cross_entropy(logits, y)
        kw = dict(on_step=False, on_epoch=True, add_dataloader_idx=False, batch_size=len(y))
        self.log(f"{domain}/{split}_loss", loss, **kw)
        self.log_dict({f"{domain}/{split}_{k}": m for k, m in metrics.items()}, **kw)
        if split == "val" and domain == self.train_domain():
            # The selection metric (checkpointing, plateau schedulers): val accuracy of the trained domain.
            self.log("val_acc", metrics["acc"], **kw)
            self.log("val_loss", loss, **kw)

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, "val", dataloader_idx)

    def test_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, "test", dataloader_idx)

    def predict_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> dict:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        probs = self(x).softmax(dim=-1)
        return {"probs": probs, "pred": probs.argmax(dim=-1)}
