"""``TransferClassifier``: the network (timm backbone, optional bottleneck, head, source head) and the one
training path every strategy uses.

The module holds the network, preprocesses and embeds images, sums the loss terms and evaluates. Everything
else is a part it composes, so each can be read, tested and replaced alone:

* where the starting weights come from: :func:`lit_transfer.plan.weights.parse_weights` (``model.weights``,
  parsed once); a lit_transfer ``.ckpt`` is read once into a
  :class:`~lit_transfer.models.source_checkpoint.SourceCheckpoint` that the backbone, the source head and a
  distillation teacher are built from;
* optimizer param groups: a pure function, :func:`lit_transfer.param_groups.param_groups`. It creates
  **every** group up front (one per backbone layer group, split by weight decay, plus the head), frozen or not,
  so unfreezing never adds a group: LR schedulers and checkpoint resume keep working;
* which weights train: :class:`lit_transfer.freezing.Freezing` (``model.freezing``), by layer group or name
  pattern; schedules (:mod:`lit_transfer.strategies.schedule`) only say what each phase freezes;
* feature caching and forgetting measurement: callbacks (:mod:`lit_transfer.callbacks`) that
  :meth:`TransferClassifier.configure_callbacks` adds to every run that has none; the feature cache's settings
  are the callback's own (the CLI's ``feature_cache`` section), not the model's;
* loss terms: objectives and regularizers (:mod:`lit_transfer.strategies`);
* epoch metrics and the eval steps' bookkeeping: :mod:`lit_transfer.evaluation`;
* private Lightning/torch members: :mod:`lit_transfer.compat` only.
"""

from __future__ import annotations

from typing import Mapping, Optional, Union

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from lit_transfer import compat, param_groups as groups_lib
from lit_transfer.callbacks import FeatureCaching, ForgettingMeter
from lit_transfer.errors import TransferConfigError
from lit_transfer.evaluation import EvalAccumulator, check_selection, metric_collection
from lit_transfer.freezing import Freezable, Freezing, log_param_counts, select_parameters
from lit_transfer.models.backbone import normalization
from lit_transfer.models.heads import HeadCallable, LinearHead
from lit_transfer.models.network import build_network
from lit_transfer.models.source_checkpoint import SourceCheckpoint
from lit_transfer.param_groups import HEAD
from lit_transfer.plan.weights import parse_weights
from lit_transfer.step_logging import StepLogging
from lit_transfer.strategies.l2sp import Regularizer
from lit_transfer.strategies.objective import (LossTerm, Objective, SourceHeadUse, as_objectives, check_streams,
                                               training_loss)
from lit_transfer.validation import check_model_args

__all__ = ["TransferClassifier", "HEAD", "SELECTIONS", "load_classifier"]

SELECTIONS = ("auto", "source_val", "entropy", "snd", "dev", "oracle")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def _check_args(selection: str, compile_mode: str, compile_options: Optional[dict]) -> None:
    if compile_mode not in COMPILE_MODES:
        raise TransferConfigError(
            f"model.compile_mode must be one of {', '.join(COMPILE_MODES)}, got {compile_mode!r}")
    if compile_mode != "default" and compile_options and "mode" in compile_options:
        raise TransferConfigError("set the compile mode once: model.compile_mode or model.compile_options.mode")
    if selection not in SELECTIONS:
        raise TransferConfigError(f"model.selection must be one of {', '.join(SELECTIONS)}, got {selection!r}")


def _compile_backbone(model) -> None:
    """At every fit/validate/test start (``configure_model``): compile the backbone in place the first time only;
    its compiled graphs then serve every later stage, epoch and phase."""
    hp = model.hparams
    if hp.get("compile") and not compat.is_compiled(model.backbone.model):
        options = dict(hp.get("compile_options") or {})
        if hp.get("compile_mode", "default") != "default":
            options["mode"] = hp.compile_mode
        model.backbone.model.compile(**options)


def _default_optimizer(params) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, weight_decay=0.01)


def load_classifier(path) -> "TransferClassifier":
    """A TransferClassifier rebuilt from a lit_transfer checkpoint file (its backbone and head, nothing else)."""
    checkpoint = SourceCheckpoint.read(parse_weights(path))
    if checkpoint is None:
        raise TransferConfigError(f"{path} is not a lit_transfer run checkpoint (.ckpt)")
    return TransferClassifier.from_checkpoint(checkpoint)


class TransferClassifier(Freezable, StepLogging):
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
        frozen_params: parameter-name patterns (fnmatch, or ``re:<regex>``) frozen for the whole run, whatever a
            fine-tuning schedule's phase says (:mod:`lit_transfer.freezing`), e.g. ``["backbone.model.stem.*"]``.
        regularizer: a loss module added to the task loss (e.g. :class:`~lit_transfer.strategies.L2SP`).
        label_smoothing: cross-entropy label smoothing.
        objective: a loss module, or a list of them (:mod:`lit_transfer.strategies.objective`): loss terms
            (DANN, MCC, ...) add ``weight × term`` to the cross-entropy; a whole-step objective (MultiTask,
            Distill, LwF) replaces it.
        bottleneck: width of a bottleneck (Linear → BatchNorm → ReLU) between the backbone's pooled features
            and the head, as in DANN/CDAN/MCC (256); part of ``embed``, trained at the head's learning rate.
        selection: what selects the checkpoint: the logged ``val_acc`` of ``auto`` (val accuracy of the domain
            the head predicts), ``source_val`` or ``oracle`` (target val labels); or, label-free, the logged
            ``target/val_score`` of ``entropy`` / ``snd`` / ``dev`` (scores of the target val images, not
            accuracies: :mod:`lit_transfer.evaluation`).
        channels_last: NHWC memory format for the backbone and its input (faster convolutions on GPUs).
        compile: ``torch.compile`` the backbone once, with ``compile_options`` and ``compile_mode`` (``default``,
            ``reduce-overhead``, ``max-autotune``, ``max-autotune-no-cudagraphs``); no recompile per epoch.

    When ``weights`` is a lit_transfer checkpoint, its (source) head is kept, frozen, as ``source_head``: a target
    run then reports how much it forgets the source (:class:`~lit_transfer.callbacks.ForgettingMeter`).
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
        objective: Optional[Union[Objective, LossTerm, list[Union[Objective, LossTerm]]]] = None,
        selection: str = "auto",
        channels_last: bool = False,
        compile: bool = False,
        compile_options: Optional[dict] = None,
        bottleneck: Optional[int] = None,
        frozen_params: Optional[list[str]] = None,
        compile_mode: str = "default",
    ):
        super().__init__()
        _check_args(selection, compile_mode, compile_options)
        check_model_args(lr=lr, backbone_lr_scale=backbone_lr_scale, layer_decay=layer_decay,
                         label_smoothing=label_smoothing)
        weights = None if weights is None else str(weights)  # a Path would not load with weights_only=True
        # Only plain values go into checkpoints (they load with weights_only=True): the head as the CLI gives it
        # ({class_path, init_args}), not a class. logger=False: loggers get the CLI's whole config already.
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler", "regularizer", "objective"], logger=False)
        if not isinstance(self.hparams.get("head"), (str, Mapping)):
            del self.hparams["head"]
        net = build_network(backbone, weights, in_chans, head, num_classes, bottleneck, channels_last)
        self.backbone, self.bottleneck, self.head, self.head_factory = net.backbone, net.bottleneck, net.head, head
        self.source_head_eval = False  # evaluate the source domain with source_head (joint objectives)
        self.source_head, self.source_num_classes = net.source_head, net.source_num_classes  # frozen unless used
        if self.source_head is not None:  # measured once at fit start (ForgettingMeter); restored on resume
            self.register_buffer("source_acc_before", torch.tensor(float("nan")))
        self.optimizer_factory, self.lr_scheduler_factory = optimizer, lr_scheduler
        self.num_classes = num_classes
        mean, std = normalization(self.backbone.data_config, in_chans)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)
        self.freezing = Freezing(frozen_params or (), freeze_bn_stats=freeze_bn_stats)
        if frozen_params:
            select_parameters(self, frozen_params)  # a pattern matching nothing is a config error
            self.freezing.apply(self)
        self.regularizer = regularizer
        self.metrics = nn.ModuleDict({f"{d}_{s}": metric_collection(num_classes) for d in ("target", "source")
                                      for s in ("val", "test")})
        self.evaluation = EvalAccumulator()
        if isinstance(objective, (list, tuple)):
            objective = nn.ModuleList(objective) if objective else None
        self.objective = objective
        for obj in as_objectives(objective):  # what objectives need of the source head, provided before binding
            if getattr(obj, "source_head_use", None) is not None:
                self.use_source_head(obj.source_head_use, type(obj).__name__)
        for part in [regularizer, *as_objectives(objective)]:  # parts build their own modules (objective.py)
            if part is not None and hasattr(part, "bind"):
                part.bind(self, net.checkpoint)

    @classmethod
    def from_checkpoint(cls, checkpoint: SourceCheckpoint) -> "TransferClassifier":
        """The network of a lit_transfer run's checkpoint: its backbone and head, nothing else (e.g. a teacher)."""
        kwargs, state = checkpoint.network()
        model = cls(**kwargs)
        model.load_state_dict(state, strict=True)
        return model

    @property
    def feature_dim(self) -> int:
        """Width of ``embed``'s output (the bottleneck's, if any): what heads and discriminators take."""
        return self.hparams.bottleneck or self.backbone.out_features

    @property
    def objectives(self) -> list[nn.Module]:
        return as_objectives(self.objective)

    def configure_callbacks(self):
        """Callbacks every run needs, whatever the config adds (Lightning runs them after the config's ones): a
        default :class:`FeatureCaching` where the trainer has none (the CLI brings one, from its
        ``feature_cache`` section), and the forgetting meter."""
        trainer = compat.attached_trainer(self)
        has_cache = trainer is not None and any(isinstance(c, FeatureCaching) for c in trainer.callbacks)
        return [*([] if has_cache else [FeatureCaching()]), ForgettingMeter()]

    # ---------------------------------------------------------- source head
    def use_source_head(self, use: SourceHeadUse, user: str = "the objective") -> nn.Module:
        """The source head as an objective declares it (``use``): the checkpoint's, else a new one; trainable
        or frozen; evaluating the source domain or not."""
        if self.source_head is None:
            if use.from_checkpoint:
                raise TransferConfigError(f"{user} needs model.weights = a lit_transfer checkpoint (its head is the "
                                          "source head the objective uses)")
            self.source_num_classes = use.num_classes or self.num_classes
            self.source_head = self.head_factory(self.feature_dim, self.source_num_classes)
        if self.source_num_classes != self.num_classes:
            metrics = metric_collection(self.source_num_classes)
            for s in ("val", "test"):
                self.metrics[f"source_{s}"] = metrics.clone()
        self.source_head.requires_grad_(use.trainable)
        self.source_head_eval = self.source_head_eval or use.evaluates_source
        return self.source_head

    def domain_head(self, domain: str) -> nn.Module:
        """The head that predicts ``domain``: the source head for the source under joint training."""
        if domain == "source" and self.source_head_eval and self.source_head is not None:
            return self.source_head
        return self.head

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 images in [0, 255] (the data module's batches, already on the device) → normalised floats there;
        channels_last is applied to the uint8 input (element-wise ops keep the layout: no float copy)."""
        if self.hparams.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if x.dtype == torch.uint8:
            x = x.float().div_(255.0)
        return (x - self.mean) / self.std

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 2 and x.is_floating_point():  # rows of cached backbone embeddings (lit_transfer.features)
            return x.to(self.mean.dtype)
        f = self.backbone(self.preprocess(x))
        return f if self.bottleneck is None else self.bottleneck(f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))

    def configure_model(self) -> None:
        _compile_backbone(self)

    def on_fit_start(self) -> None:
        log_param_counts(self, reason="at fit start")
        dm = self._datamodule()
        if dm is not None:  # fail at fit start, with the config key to change
            check_streams(self, dm)
            check_selection(self, dm)

    def param_groups(self) -> list[dict]:
        """All param groups, frozen or not (:func:`lit_transfer.param_groups.param_groups`)."""
        return groups_lib.param_groups(self, backbone_lr_scale=self.hparams.backbone_lr_scale,
                                       layer_decay=self.hparams.layer_decay)

    def configure_optimizers(self):
        hp = self.hparams
        return groups_lib.configure_optimizers(self, self.optimizer_factory, self.lr_scheduler_factory, hp.lr,
                                               hp.backbone_lr_scale, hp.layer_decay)

    def scale_lr(self, factor: float, layer_groups: Optional[set[int]] = None) -> None:
        """Multiply the learning rate of (some) param groups, schedulers included, e.g. for LP→FT."""
        groups_lib.scale_lr(self.trainer, factor, layer_groups)

    def _datamodule(self):
        return getattr(compat.attached_trainer(self), "datamodule", None)

    def train_domain(self) -> str:
        """The domain the head predicts: ``train_on`` (the target when training on source and target)."""
        dm = self._datamodule()
        return getattr(dm, "primary", None) or getattr(dm, "train_on", "target")

    def selection_domain(self) -> Optional[str]:
        """Whose val accuracy is ``val_acc``; ``None`` for a label-free score (``target/val_score``)."""
        return {"auto": self.train_domain(), "source_val": "source", "oracle": "target", "entropy": None,
                "snd": None, "dev": None}[self.hparams.selection]

    # --------------------------------------------------------------- steps
    def task_loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y, label_smoothing=self.hparams.label_smoothing)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        logs: dict = {}
        if self.objective is not None:
            loss, logs, n = training_loss(self, batch, self.objective)
        else:
            # Without an objective a multi-stream batch trains on its labelled stream only.
            x, y = batch[self.train_domain()] if isinstance(batch, dict) else batch
            loss, n = self.task_loss(self(x), y), len(y)
        # Not prog_bar=True: Lightning converts progress-bar values to Python numbers after *every* batch (a
        # device→host sync per step); ThrottledProgressBar reads train/loss itself, only when it redraws.
        self.log("train/loss", loss, on_step=True, on_epoch=False, batch_size=n)
        for key, value in logs.items():
            self.log(f"train/{key}", value, on_step=True, on_epoch=False, batch_size=n)
        if self.regularizer is not None:
            reg = self.regularizer(self)
            self.log("train/reg", reg, on_step=True, on_epoch=False, batch_size=n)
            loss = loss + reg
        return loss

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.evaluation.step(self, batch, "val", dataloader_idx)

    def test_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.evaluation.step(self, batch, "test", dataloader_idx)

    def on_validation_epoch_start(self) -> None:
        self.evaluation.start(self.metrics, "val")

    def on_validation_epoch_end(self) -> None:
        self.evaluation.log_epoch(self, "val")
        self.evaluation.log_label_free_scores(self)

    def on_test_epoch_start(self) -> None:
        self.evaluation.start(self.metrics, "test")

    def on_test_epoch_end(self) -> None:
        self.evaluation.log_epoch(self, "test")

    def predict_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> dict:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        probs = self(x).softmax(dim=-1)
        return {"probs": probs, "pred": probs.argmax(dim=-1)}
