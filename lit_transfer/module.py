"""``TransferClassifier``: a timm backbone + a pluggable head, and the one training path every strategy uses.

Strategies never build their own optimizers. The module creates **every** param group up front (one per
backbone layer group, split by weight decay, plus the head), frozen or not, so unfreezing later never adds a
group: LR schedulers and checkpoint resume keep working. Strategies only flip ``requires_grad`` through
:meth:`TransferClassifier.set_frozen` and rescale group learning rates through :meth:`scale_lr`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional, Union

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from lit_transfer.errors import TransferConfigError
from lit_transfer.models.backbone import Backbone
from lit_transfer.models.heads import HeadCallable, LinearHead
from lit_transfer.models.weights import read_state_dict
from lit_transfer.strategies.l2sp import Regularizer
from lit_transfer.strategies.objective import Objective
from lit_transfer.validation import check_model_args

__all__ = ["TransferClassifier"]

log = logging.getLogger(__name__)

HEAD = -1  # ``layer_group`` of the head's param groups
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)
SELECTIONS = ("auto", "source_val", "entropy", "snd", "oracle")
UNSUPERVISED_SELECTIONS = ("entropy", "snd")  # scores of target val images (lit_transfer.strategies.selection)


def _metric_collection(num_classes: int) -> MetricCollection:
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes, average="micro"),
            "f1": MulticlassF1Score(num_classes, average="macro"),
        },
        compute_groups=False,  # two metrics with different states: grouping would only add a check per update
    )


NVML_CHECK_ENV = "PYTORCH_NVML_BASED_CUDA_CHECK"


def drop_nvml_cuda_check(device: torch.device) -> bool:
    """Stop ``torch.cuda.is_available()`` querying NVML when that protects nothing; returns whether it did.

    Lightning sets ``PYTORCH_NVML_BASED_CUDA_CHECK=1`` on import so that the availability check does not
    initialise CUDA before a fork. torch's Adam/AdamW call that check on every ``step()`` (graph-capture
    health check), and through NVML it loads the NVML library each time: 39 µs a call instead of 1 µs on our
    CPU machine. Once this process runs on a GPU, CUDA is initialised anyway; without any GPU there is nothing
    to initialise. Only a CPU run on a machine with GPUs keeps the check.
    """
    if os.environ.get(NVML_CHECK_ENV) != "1":
        return False
    if device.type != "cuda" and torch.cuda.is_available():
        return False
    del os.environ[NVML_CHECK_ENV]
    return True


def source_head_state(weights) -> Optional[tuple[dict[str, torch.Tensor], int]]:
    """``(head state_dict, num_classes)`` of the source head in a lit_transfer checkpoint, else ``None``.

    A checkpoint that itself carries a ``source_head`` (a target run) passes that one on; otherwise its
    ``head`` is the source head (a source run).
    """
    if not isinstance(weights, (str, os.PathLike)) or not str(weights).endswith(".ckpt"):
        return None
    path = Path(weights).expanduser()
    if not path.is_file():
        return None
    state = read_state_dict(path)
    if not any(k.startswith("backbone.model.") for k in state):
        return None  # not a lit_transfer checkpoint
    for prefix in ("source_head.", "head."):
        sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        matrices = [v for v in sub.values() if v.ndim == 2]
        if matrices:
            return sub, int(matrices[-1].shape[0])
    return None


def _prefer_fused_on_cpu(optimizer: torch.optim.Optimizer) -> None:
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
        lr: base learning rate of the head; it replaces the optimizer's own ``lr`` argument. Backbone group
            ``i`` of ``n`` gets ``lr * backbone_lr_scale * layer_decay ** (n - i)`` (discriminative LRs).
        freeze_bn_stats: frozen groups keep their BatchNorm running statistics (eval mode) too.
        regularizer: a loss module added to the task loss (e.g. :class:`~lit_transfer.strategies.L2SP`).
        label_smoothing: cross-entropy label smoothing.
        objective: a loss module, or a list of them (:mod:`lit_transfer.strategies.objective`): loss terms
            (DANN, CDAN, MCC, CORAL, MMD) each add ``weight × term`` to the cross-entropy of the labelled
            stream; a whole-step objective (MultiTask, Distill, LwF) replaces that cross-entropy. Their own
            modules (a domain discriminator, a frozen teacher) are submodules: checkpointed.
        bottleneck: width of a bottleneck (Linear → BatchNorm → ReLU) between the backbone's pooled features
            and the head, as in DANN/CDAN/MCC (256); part of ``embed``, trained at the head's learning rate.
        selection: what the logged ``val_acc`` (the checkpoint's selection metric) is: ``auto`` (val accuracy
            of the domain the head predicts: source val for unsupervised DA), ``source_val``, ``entropy`` (an
            unsupervised information-maximisation score on target val images, no labels), ``snd`` (soft
            neighborhood density of the target val predictions, no labels; see
            :mod:`lit_transfer.strategies.selection`) or ``oracle`` (target val labels; marked so in
            ``result.json``). Unsupervised-DA runs log both label-free scores every validation epoch.
        feature_cache: while the whole backbone is frozen (and train-time augmentation and dropout are off),
            compute its embeddings of each split once and train/evaluate the head on them
            (:mod:`lit_transfer.features`); same results as recomputing them every epoch.
        feature_cache_dtype: ``float32`` (exact) or ``float16`` (half the memory, rounded features).
        feature_cache_dir: keep cached embeddings as ``.npy`` memory maps here (shared across processes);
            default: in memory, spilled to a temporary directory above ``$LIT_TRANSFER_FEATURE_CACHE_MB``.
        channels_last: NHWC memory format for the backbone and its input (faster convolutions on recent GPUs
            with ``bf16-mixed``).
        compile: ``torch.compile`` the backbone (at fit/validate/test start); ``compile_options`` are passed to
            it (e.g. ``{mode: max-autotune}`` or ``{backend: aot_eager}``).

    When ``weights`` is a lit_transfer checkpoint, its (source) head is kept, frozen, as ``source_head``: a
    target run then reports ``source/test_acc_before`` (the loaded model on the source test split, measured
    at fit start), ``source/test_acc_after`` (the trained backbone + source head) and ``source/forgetting``.
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
        regularizer: Optional[Regularizer] = None,
        label_smoothing: float = 0.0,
        objective: Optional[Union[Objective, list[Objective]]] = None,
        selection: str = "auto",
        feature_cache: bool = True,
        feature_cache_dtype: str = "float32",
        feature_cache_dir: Optional[str] = None,
        channels_last: bool = False,
        compile: bool = False,
        compile_options: Optional[dict] = None,
        bottleneck: Optional[int] = None,
    ):
        super().__init__()
        from lit_transfer.features import FEATURE_DTYPES

        if feature_cache_dtype not in FEATURE_DTYPES:
            raise TransferConfigError(
                f"model.feature_cache_dtype must be one of {', '.join(FEATURE_DTYPES)}, got {feature_cache_dtype!r}")
        if selection not in SELECTIONS:
            raise TransferConfigError(f"model.selection must be one of {', '.join(SELECTIONS)}, got {selection!r}")
        check_model_args(lr=lr, backbone_lr_scale=backbone_lr_scale, layer_decay=layer_decay,
                         label_smoothing=label_smoothing)
        weights = None if weights is None else str(weights)  # a Path would not load with weights_only=True
        # Only plain values go into checkpoints, so they load with torch.load(weights_only=True). logger=False:
        # the CLI sends the whole resolved config to loggers, nested; module hparams would duplicate it.
        self.save_hyperparameters(
            ignore=["head", "optimizer", "lr_scheduler", "regularizer", "objective"], logger=False
        )
        self.backbone = Backbone(backbone, in_chans=in_chans, weights=weights)
        self._channels_last = channels_last
        if channels_last:
            self.backbone.to(memory_format=torch.channels_last)
        self.bottleneck: Optional[nn.Module] = None
        if bottleneck:
            self.bottleneck = nn.Sequential(nn.Linear(self.backbone.out_features, int(bottleneck)),
                                            nn.BatchNorm1d(int(bottleneck)), nn.ReLU())
        self.head = head(self.feature_dim, num_classes)
        self.head_factory = head
        self.source_head: Optional[nn.Module] = None
        self.source_num_classes: Optional[int] = None
        self.source_head_eval = False  # evaluate the source domain with source_head (set by joint objectives)
        self._load_source_head(weights)
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
        metrics = _metric_collection(num_classes)
        self.metrics = nn.ModuleDict(
            {f"{d}_{s}": metrics.clone() for d in ("target", "source") for s in ("val", "test")}
        )
        self._target_val_probs: list[torch.Tensor] = []  # label-free selection scores' inputs
        self._eval_loss: dict[str, list[torch.Tensor]] = {}  # "target_val" -> [sum of loss * n, n]
        from lit_transfer.strategies.objective import as_objectives

        if isinstance(objective, (list, tuple)):
            objective = nn.ModuleList(objective) if objective else None
        self.objective = objective
        for obj in as_objectives(objective):
            if hasattr(obj, "bind"):
                obj.bind(self)  # e.g. DANN builds its discriminator, LwF snapshots the source model

    @property
    def feature_dim(self) -> int:
        """Width of ``embed``'s output (the bottleneck's, if any): what heads and discriminators take."""
        return self.hparams.bottleneck or self.backbone.out_features

    @property
    def objectives(self) -> list[nn.Module]:
        from lit_transfer.strategies.objective import as_objectives

        return as_objectives(self.objective)

    # ---------------------------------------------------------- source head
    def _load_source_head(self, weights) -> None:
        found = source_head_state(weights)
        if found is None:
            return
        state, n = found
        try:
            source_head = self.head_factory(self.feature_dim, n)
            source_head.load_state_dict(state)
        except (RuntimeError, TypeError, ValueError) as err:
            log.warning("cannot rebuild the source head of %s with this model's head (%s); no forgetting metrics",
                        weights, err)
            return
        self.source_head = source_head.requires_grad_(False)  # a frozen copy unless an objective trains it
        self.source_num_classes = n
        self.register_buffer("source_acc_before", torch.tensor(float("nan")))

    def add_source_head(self, num_classes: Optional[int] = None, trainable: bool = True) -> nn.Module:
        """The source head (the checkpoint's, else a new one), for objectives that train on the source."""
        if self.source_head is None:
            self.source_num_classes = num_classes or self.num_classes
            self.source_head = self.head_factory(self.feature_dim, self.source_num_classes)
        if self.source_num_classes != self.num_classes:
            metrics = _metric_collection(self.source_num_classes)
            for s in ("val", "test"):
                self.metrics[f"source_{s}"] = metrics.clone()
        self.source_head.requires_grad_(trainable)
        return self.source_head

    def tracks_forgetting(self) -> bool:
        """A target run from a source checkpoint whose source head fits the data's source domain."""
        dm = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        if not hasattr(self, "source_acc_before") or dm is None or not hasattr(dm, "subset"):
            return False
        from lit_transfer.data import domains

        return (getattr(dm, "primary", "target") != "source" and dm.source_num_classes == self.source_num_classes
                and domains.in_chans(dm.source) == self.hparams.in_chans)

    @torch.no_grad()
    def source_head_accuracy(self) -> float:
        """Accuracy of the current backbone + ``source_head`` on the source test split."""
        dm = self.trainer.datamodule
        images, labels = dm.subset("source", "test")
        was_training = self.training
        self.eval()
        correct, bs = 0, dm.eval_batch_size
        for i in range(0, len(labels), bs):
            x, y = images[i : i + bs].to(self.device), labels[i : i + bs].to(self.device)
            correct += int((self.source_head(self.embed(x)).argmax(-1) == y).sum())
        self.train(was_training)
        return correct / max(len(labels), 1)

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
        x = (x - self.mean) / self.std
        if self._channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 2 and x.is_floating_point():  # rows of cached backbone embeddings (lit_transfer.features)
            return x.to(self.mean.dtype)
        f = self.backbone(self.preprocess(x))
        return f if self.bottleneck is None else self.bottleneck(f)

    # -------------------------------------------------------- feature cache
    def feature_cache_active(self, train: bool) -> bool:
        """Whether batches may be cached embeddings now: the whole backbone frozen, and for training also no
        objective, no augmentation and a deterministic backbone (frozen BatchNorm statistics, no dropout)."""
        from lit_transfer.features import backbone_is_deterministic

        if not self.hparams.get("feature_cache", False) or self.frozen_groups < self.num_groups:
            return False
        if self.bottleneck is not None:  # embed() includes the (trained) bottleneck: nothing fixed to cache
            return False
        if not train:
            return True  # eval mode: a frozen backbone is a fixed function
        dm = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        if self.objective is not None or getattr(dm, "augment", None):
            return False
        return backbone_is_deterministic(self.backbone)

    def use_cached_features(self, loaders, train: bool) -> None:
        """Point ``InMemoryLoader``s at cached embeddings of their images (or back to the images)."""
        from lit_transfer import features
        from lit_transfer.data.loader import InMemoryLoader

        loaders = [ld for ld in (loaders if isinstance(loaders, (list, tuple)) else [loaders])
                   if isinstance(ld, InMemoryLoader)]
        if not loaders:
            return
        active = self.feature_cache_active(train)
        trainer = self._trainer
        context, name = None, ""
        if trainer is not None:  # cached features are computed exactly like the ones they replace
            context, name = trainer.precision_plugin.forward_context, f"precision={trainer.precision}"
        name += f"|channels_last={self._channels_last}"
        dtype = features.FEATURE_DTYPES[self.hparams.get("feature_cache_dtype", "float32")]
        for loader in loaders:
            loader.features = features.embeddings(
                self, loader.images, dtype=dtype, chunk=max(loader.batch_size, 256), forward_context=context,
                context=name, cache_dir=self.hparams.get("feature_cache_dir"),
            ) if active else None

    def on_train_epoch_start(self) -> None:
        # Runs after the callbacks' hook, so after a FinetuningSchedule has set this epoch's frozen groups.
        self.use_cached_features(self.trainer.train_dataloader, train=True)

    def on_test_epoch_start(self) -> None:
        self._start_eval_epoch("test")
        self.use_cached_features(self.trainer.test_dataloaders, train=False)

    def configure_model(self) -> None:
        if self.hparams.get("compile") and not getattr(self.backbone.model, "_compiled_call_impl", None):
            self.backbone.model.compile(**(self.hparams.get("compile_options") or {}))

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
        if self.bottleneck is not None:
            params += list(self.bottleneck.parameters())
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
        drop_nvml_cuda_check(self.device)
        self.log_param_counts(reason="at fit start")
        self._check_streams_and_selection()
        # "before" is measured once: a resumed run restores it with the checkpoint (a buffer), not re-measures.
        if self.tracks_forgetting() and torch.isnan(self.source_acc_before):
            self.source_acc_before.fill_(self.source_head_accuracy())

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
        _prefer_fused_on_cpu(optimizer)
        if self.lr_scheduler_factory is None:
            return optimizer
        scheduler = self.lr_scheduler_factory(optimizer)
        if hasattr(scheduler, "set_total_steps") and getattr(scheduler, "total_steps", None) is None:
            scheduler.set_total_steps(self.trainer.estimated_stepping_batches)  # e.g. InverseDecayLR's p
        config = {"scheduler": scheduler, "interval": getattr(scheduler, "interval", "epoch")}
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
        """The domain the head predicts: ``train_on`` (the target when training on source and target)."""
        dm = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        return getattr(dm, "primary", None) or getattr(dm, "train_on", "target")

    def selection_domain(self) -> Optional[str]:
        """Whose val accuracy is ``val_acc``; ``None`` for the unsupervised ``entropy`` score."""
        return {"auto": self.train_domain(), "source_val": "source", "oracle": "target", "entropy": None,
                "snd": None}[self.hparams.selection]

    def _check_streams_and_selection(self) -> None:
        dm = getattr(self._trainer, "datamodule", None)
        if dm is None:
            return
        streams = getattr(dm, "train_streams", [self.train_domain()])
        whole = [o for o in self.objectives if getattr(o, "replaces_task_loss", True)]
        if not whole and len([s for s in streams if s != "unlabeled"]) > 1:
            raise TransferConfigError("data.train_on: source+target needs a model.objective that uses both "
                                      "streams, e.g. lit_transfer.strategies.MultiTask")
        for obj in self.objectives:
            if hasattr(obj, "check_data"):
                obj.check_data(self, dm)
        needed = self.selection_domain() or "target"
        if needed not in getattr(dm, "val_domains", [needed]):
            raise TransferConfigError(f"model.selection={self.hparams.selection} needs {needed} validation data, "
                                      f"but this data pair validates on {dm.val_domains} only")

    def log(self, name: str, value, *args, **kwargs) -> None:
        """``LightningModule.log``, but step-only training values are recorded on logging steps only.

        Lightning hands step values to the loggers every ``trainer.log_every_n_steps`` steps anyway; recording
        them on every step (result collection, progress-bar metrics) costs about a millisecond, more than a
        small model's whole step on a CPU. The progress bar shows the last recorded value.
        """
        if kwargs.get("on_step") and not kwargs.get("on_epoch") and not self._logging_step():
            return
        super().log(name, value, *args, **kwargs)

    def _logging_step(self) -> bool:
        trainer = self._trainer
        if trainer is None or not trainer.training:
            return True
        connector = getattr(trainer, "_logger_connector", None)
        return bool(getattr(connector, "should_update_logs", True))

    def task_loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y, label_smoothing=self.hparams.label_smoothing)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        logs: dict = {}
        if self.objective is not None:
            from lit_transfer.strategies.objective import training_loss

            loss, logs, n = training_loss(self, batch, self.objective)
        else:
            # Without an objective a multi-stream batch trains on its labelled stream only.
            x, y = batch[self.train_domain()] if isinstance(batch, dict) else batch
            loss, n = self.task_loss(self(x), y), len(y)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False, batch_size=n)
        for key, value in logs.items():
            self.log(f"train/{key}", value, on_step=True, on_epoch=False, batch_size=n)
        if self.regularizer is not None:
            reg = self.regularizer(self)
            self.log("train/reg", reg, on_step=True, on_epoch=False, batch_size=n)
            loss = loss + reg
        return loss

    def domain_head(self, domain: str) -> nn.Module:
        """The head that predicts ``domain``: the source head for the source under joint training."""
        if domain == "source" and self.source_head_eval and self.source_head is not None:
            return self.source_head
        return self.head

    def _eval_step(self, batch, split: str, dataloader_idx: int) -> None:
        x, y = batch
        domain = self._domain(split, dataloader_idx)
        logits = self.domain_head(domain)(self.embed(x))
        key = f"{domain}_{split}"
        # Accumulate only; metrics are computed and logged once per epoch (_log_eval_epoch). Logging the
        # metric objects on every batch, the usual Lightning pattern, moves each one between devices per call.
        self.metrics[key].update(logits, y)
        loss_sum = F.cross_entropy(logits, y, reduction="sum").detach()
        n = torch.tensor(float(len(y)), device=loss_sum.device)
        acc = self._eval_loss.get(key)
        self._eval_loss[key] = [loss_sum, n] if acc is None else [acc[0] + loss_sum, acc[1] + n]
        if split == "val" and domain == "target" and self._scores_target_val():
            # Label-free scores: only the predictions on target val images are used, never their labels.
            self._target_val_probs.append(logits.detach().float().softmax(-1))

    def _scores_target_val(self) -> bool:
        """Label-free scores are computed for unsupervised DA (trained on the source) or when they select."""
        return self.hparams.selection in UNSUPERVISED_SELECTIONS or self.train_domain() == "source"

    def _start_eval_epoch(self, split: str) -> None:
        for key, metrics in self.metrics.items():
            if key.endswith(f"_{split}"):
                metrics.reset()
                self._eval_loss.pop(key, None)

    def _log_eval_epoch(self, split: str) -> None:
        """Per domain: ``{domain}/{split}_acc|f1|loss`` over the whole epoch (all ranks); for the selection
        domain's validation also ``val_acc``/``val_loss``, what checkpointing and plateau schedulers watch."""
        reduce = self.trainer.strategy.reduce
        for key in sorted(k for k in self._eval_loss if k.endswith(f"_{split}")):
            domain = key[: -len(split) - 1]
            loss_sum, n = (reduce(t, reduce_op="sum") for t in self._eval_loss.pop(key))
            values = {f"{domain}/{split}_{k}": v for k, v in self.metrics[key].compute().items()}
            values[f"{domain}/{split}_loss"] = loss_sum / n
            if split == "val" and domain == self.selection_domain():
                values["val_acc"], values["val_loss"] = values[f"{domain}/val_acc"], loss_sum / n
            self.log_dict(values)
            self.metrics[key].reset()

    def on_validation_epoch_start(self) -> None:
        self._target_val_probs = []
        self._start_eval_epoch("val")
        self.use_cached_features(self.trainer.val_dataloaders, train=False)

    def on_validation_epoch_end(self) -> None:
        self._log_eval_epoch("val")
        if not self._target_val_probs:
            return
        from lit_transfer.strategies.selection import snd_score

        probs = torch.cat(self._target_val_probs)
        self._target_val_probs = []
        reduce = self.trainer.strategy.reduce
        ent = -(probs * probs.clamp_min(1e-12).log()).sum(-1)
        prob_sum, ent_sum, n = (reduce(t, reduce_op="sum") for t in
                                (probs.sum(0), ent.sum(), torch.tensor(float(len(ent)), device=ent.device)))
        mean_p = prob_sum / n
        # Information maximisation: confident (low mean entropy) and diverse (high entropy of the mean).
        im = -(mean_p * mean_p.clamp_min(1e-12).log()).sum() - ent_sum / n
        # SND on this rank's predictions (all of them on one device).
        snd = reduce(snd_score(probs), reduce_op="mean")
        self.log("target/val_im_score", im)
        self.log("target/val_snd", snd)
        selection = self.hparams.selection
        if selection in UNSUPERVISED_SELECTIONS:
            self.log("val_acc", im if selection == "entropy" else snd)
            self.log("val_loss", ent_sum / n)

    def on_test_epoch_end(self) -> None:
        self._log_eval_epoch("test")
        if self.tracks_forgetting() and not torch.isnan(self.source_acc_before):
            before, after = float(self.source_acc_before), self.source_head_accuracy()
            self.log("source/test_acc_before", before)
            self.log("source/test_acc_after", after)
            self.log("source/forgetting", before - after)

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, "val", dataloader_idx)

    def test_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, "test", dataloader_idx)

    def predict_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> dict:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        probs = self(x).softmax(dim=-1)
        return {"probs": probs, "pred": probs.argmax(dim=-1)}
