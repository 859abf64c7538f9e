"""What ``model.objective`` holds: loss modules composed with the model, TLlib style. Two kinds, two base classes:

* a **loss term** (:class:`LossTerm`: DANN, CDAN, MCC, CORAL, MMD) is one weighted loss over the step's tensors,
  ``term(step)`` → ``value`` or ``(value, {name: value})``. The step (:class:`Step`) computes each stream's
  features and logits once (one forward over all streams, so BatchNorm sees source and target together) and
  every term reads them;
* an **objective** (:class:`Objective`: MultiTask, Distill, LwF) is a whole training step,
  ``training_step(model, batch)`` → the loss (its own cross-entropy included) or ``(loss, {name: value})``.

``model.objective`` is one of them or a list; the training loss is

    task loss (cross-entropy on the labelled stream) + Σ weight_i · term_i

with at most one objective's loss in place of the task loss. So ``DANN + MCC`` is two YAML entries::

    model:
      objective:
        - {class_path: lit_transfer.strategies.DANN, init_args: {weight: 1.0}}
        - {class_path: lit_transfer.strategies.MCC, init_args: {weight: 1.0, temperature: 2.5}}

The contract, for both:

- ``bind(model, checkpoint)`` is called once from the model's ``__init__`` (parts built, transferred weights
  loaded): build the part's own modules (a discriminator over ``model.feature_dim``, LwF's frozen snapshot,
  Distill's teacher from the source checkpoint). It reads the model and never changes it: what an objective
  needs of the model's source head it declares (``source_head_use``: :class:`SourceHeadUse`) and the model
  provides before binding. Modules stored on the part are submodules of the model, so checkpoints carry them.
  Trainable ones go to the optimizer's ``extra`` group (the head's learning rate); frozen ones stay out.
- ``requires``: the training streams read; a missing one is a one-line config error at fit start
  (``check_data``). ``batch`` is an ``(x, y)`` tuple for single-stream training, or a dict
  ``{"source": (x, y), "target": (x, y), "unlabeled": x}`` holding only the configured streams.
- The model logs ``train/loss`` and ``train/<name>`` for each logged value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import torch
from torch import nn

from lit_transfer.errors import TransferConfigError

__all__ = ["Objective", "LossTerm", "SourceHeadUse", "check_required_streams", "Step", "training_loss", "as_objectives", "check_streams", "Frozen", "labelled", "unlabeled",
           "kd_loss", "training_progress"]


@dataclass(frozen=True)
class SourceHeadUse:
    """What an objective needs of the model's source head; the model provides it before binding the objective
    (objectives never change the model themselves).

    Args:
        trainable: the source head trains (else it stays frozen, as loaded).
        num_classes: classes of a new source head when the start checkpoint brings none (``None``: the target's).
        from_checkpoint: the head must be the source checkpoint's (``model.weights`` = a lit_transfer ``.ckpt``).
        evaluates_source: the source domain is evaluated with the source head (joint training).
    """

    trainable: bool = True
    num_classes: Optional[int] = None
    from_checkpoint: bool = False
    evaluates_source: bool = False


def check_required_streams(name: str, requires: tuple[str, ...], datamodule) -> None:
    """At fit start: the training streams ``requires`` are served by the data module, and an unlabeled target is
    not made of the source's own images; else one config error naming the setting to change."""
    streams = getattr(datamodule, "train_streams", None)
    if streams is None:
        return
    missing = [s for s in requires if s not in streams]
    specs = getattr(datamodule, "specs", None)
    if "unlabeled" in requires and not missing and specs and "source" in specs:
        from lit_transfer.data.domains import share_images

        if share_images(specs["source"], specs["target"]):
            raise TransferConfigError(
                f"{name}: source ({specs['source'].name}) and target ({specs['target'].name}) are built from the "
                "same images, so the unlabeled target would hold twins of the source's training images; set "
                "data.source.half: 0 and data.target.half: 1 (disjoint halves)")
    if missing:
        hints = {"unlabeled": "data.unlabeled_target: true", "source": "data.train_on: source (or source+target)",
                 "target": "data.train_on: target (or source+target)"}
        raise TransferConfigError(
            f"{name} needs the {', '.join(missing)} training stream(s) but the data serves {streams}; set "
            + "; ".join(hints[m] for m in missing)
        )


class Objective(nn.Module):
    """A whole training step (MultiTask, Distill, LwF): ``training_step(model, batch)`` returns the whole loss,
    its own cross-entropy included, in place of the task loss."""

    #: the training streams this objective needs (checked at fit start against the data module)
    requires: tuple[str, ...] = ()
    #: what it needs of the model's source head (:class:`SourceHeadUse`), provided by the model before ``bind``
    source_head_use: Optional[SourceHeadUse] = None

    def bind(self, model: nn.Module, checkpoint=None) -> None:
        """Called once from the model's ``__init__``, its parts built (``checkpoint``: the
        :class:`~lit_transfer.models.source_checkpoint.SourceCheckpoint` they started from, if any): build this
        objective's own modules. Reads the model, never changes it."""

    def check_data(self, model: nn.Module, datamodule) -> None:
        check_required_streams(type(self).__name__, self.requires, datamodule)

    def training_step(self, model: nn.Module, batch):  # pragma: no cover - abstract
        raise NotImplementedError


class LossTerm(nn.Module):
    """One weighted term added to the task loss: ``forward(step)`` → value, or ``(value, {name: value})``, over
    the step's tensors (:class:`Step`); it knows nothing of the trainer.

    Subclasses set ``requires`` (streams read) and ``log_name`` (logged as ``train/<log_name>``).
    """

    requires: tuple[str, ...] = ()
    log_name = "term_loss"

    def __init__(self, weight: float = 1.0):
        super().__init__()
        self.weight = float(weight)

    def bind(self, model: nn.Module, checkpoint=None) -> None:
        """Called once from the model's ``__init__``: build the term's own modules (e.g. a discriminator over
        ``model.feature_dim``). Reads the model, never changes it."""

    def check_data(self, model: nn.Module, datamodule) -> None:
        check_required_streams(type(self).__name__, self.requires, datamodule)


class Step:
    """The tensors of one training step, computed once and shared by all loss terms.

    Streams are ``source``/``target`` (labelled, ``(x, y)``) and ``unlabeled`` (images only); a single-stream
    ``(x, y)`` batch is the stream of the domain the model trains on. ``features(s)`` are the model's
    embeddings (after its bottleneck, if any), computed in one forward over every stream when their shapes
    match; ``logits(s)`` the head's outputs on them.
    """

    def __init__(self, model: nn.Module, batch):
        self.model = model
        self.batch = batch if isinstance(batch, dict) else {model.train_domain(): batch}
        self._features: Optional[dict[str, torch.Tensor]] = None
        self._logits: dict[str, torch.Tensor] = {}

    @property
    def streams(self) -> list[str]:
        return list(self.batch)

    def _get(self, stream: str):
        if stream not in self.batch:
            raise TransferConfigError(f"the training batch has no '{stream}' stream (streams: {self.streams})")
        return self.batch[stream]

    def images(self, stream: str) -> torch.Tensor:
        part = self._get(stream)
        return part[0] if isinstance(part, (tuple, list)) else part

    def labels(self, stream: str) -> torch.Tensor:
        part = self._get(stream)
        if not isinstance(part, (tuple, list)):
            raise TransferConfigError(f"the '{stream}' stream has no labels")
        return part[1]

    @property
    def batch_size(self) -> int:
        return len(self.images(self.streams[0]))

    def features(self, stream: str) -> torch.Tensor:
        if self._features is None:
            xs = [self.images(s) for s in self.streams]
            if all(x.shape[1:] == xs[0].shape[1:] for x in xs):
                f = self.model.embed(torch.cat(xs)) if len(xs) > 1 else self.model.embed(xs[0])
                self._features = dict(zip(self.streams, f.split([len(x) for x in xs])))
            else:
                self._features = {s: self.model.embed(x) for s, x in zip(self.streams, xs)}
        self._get(stream)
        return self._features[stream]

    def logits(self, stream: str) -> torch.Tensor:
        if stream not in self._logits:
            self._logits[stream] = self.model.head(self.features(stream))
        return self._logits[stream]

    def task_loss(self) -> torch.Tensor:
        """Cross-entropy of the head on the labelled stream of the domain it predicts."""
        domain = self.model.train_domain()
        labelled = [s for s, part in self.batch.items() if isinstance(part, (tuple, list))]
        if domain not in self.batch and len(labelled) == 1:  # outside a fit: the batch's one labelled stream
            domain = labelled[0]
        return self.model.task_loss(self.logits(domain), self.labels(domain))


def check_streams(model: nn.Module, datamodule) -> None:
    """At fit start: a multi-stream batch needs an objective that reads both streams; each objective checks
    the streams it ``requires``."""
    streams = getattr(datamodule, "train_streams", [model.train_domain()])
    objectives = as_objectives(model.objective)
    whole = [o for o in objectives if not isinstance(o, LossTerm)]
    if not whole and len([s for s in streams if s != "unlabeled"]) > 1:
        raise TransferConfigError("data.train_on: source+target needs a model.objective that uses both "
                                  "streams, e.g. lit_transfer.strategies.MultiTask")
    for obj in objectives:
        if hasattr(obj, "check_data"):
            obj.check_data(model, datamodule)


def as_objectives(objective) -> list[Union[Objective, LossTerm]]:
    """``model.objective`` (``None``, one objective, or a list of them) as a list."""
    if objective is None:
        return []
    return list(objective) if isinstance(objective, (list, tuple, nn.ModuleList)) else [objective]


def training_loss(model: nn.Module, batch, objectives) -> tuple[torch.Tensor, dict, int]:
    """``(loss, logs, batch size)``: the task loss (or the whole-step objective's) + Σ weight · term."""
    objectives = as_objectives(objectives)
    whole = [o for o in objectives if not isinstance(o, LossTerm)]
    if len(whole) > 1:
        raise TransferConfigError(f"model.objective holds {len(whole)} whole-step objectives "
                                  f"({', '.join(type(o).__name__ for o in whole)}); at most one can replace the task loss")
    step = Step(model, batch)
    logs: dict = {}
    if whole:
        out = whole[0].training_step(model, batch)
        loss, logs = out if isinstance(out, tuple) else (out, {})
        logs = dict(logs)
    else:
        loss = step.task_loss()
        if len(objectives) > 0:
            logs["cls_loss"] = loss
    for term in objectives:
        if term in whole:
            continue
        out = term(step)
        value, extra = out if isinstance(out, tuple) else (out, {})
        name = term.log_name if term.log_name not in logs else f"{term.log_name}_{objectives.index(term)}"
        logs[name] = value
        logs.update(extra)
        loss = loss + term.weight * value
    return loss, logs, step.batch_size


class Frozen(nn.Module):
    """A module frozen for good: no gradients, eval mode forever (``model.train()`` cannot flip it back)."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module.requires_grad_(False)
        self.module.eval()
        self.training = False

    def train(self, mode: bool = True) -> "Frozen":
        return super().train(False)

    @torch.no_grad()
    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)


def labelled(batch, domain: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``(x, y)`` of a labelled stream (a single-stream batch is the trained domain's)."""
    if isinstance(batch, dict):
        if domain not in batch:
            raise TransferConfigError(f"the training batch has no '{domain}' stream (streams: {sorted(batch)})")
        return batch[domain]
    return batch


def unlabeled(batch) -> Optional[torch.Tensor]:
    """The unlabeled-target images of a batch, if the data module serves that stream."""
    return batch.get("unlabeled") if isinstance(batch, dict) else None


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton's distillation loss: ``T² · KL(softmax(t/T) ‖ softmax(s/T))``, averaged over the batch."""
    t = temperature
    log_p = torch.log_softmax(student_logits.float() / t, dim=-1)
    q = torch.softmax(teacher_logits.float() / t, dim=-1)
    return torch.nn.functional.kl_div(log_p, q, reduction="batchmean") * t * t


def training_progress(model: nn.Module) -> float:
    """``p`` in [0, 1]: ``global_step / estimated_stepping_batches`` (1.0 outside a fit)."""
    from lit_transfer.compat import attached_trainer

    trainer = attached_trainer(model)
    if trainer is None:
        return 1.0
    total = trainer.estimated_stepping_batches
    if not total or total == float("inf"):
        return 1.0
    return min(max(trainer.global_step / total, 0.0), 1.0)
