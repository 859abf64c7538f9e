"""Freezing: the one component that decides which weights train and which norm layers keep their statistics.

Nothing else in lit_transfer sets ``requires_grad`` on the network (backbone, bottleneck, head): schedules,
BitFit and ``model.frozen_params`` all state *what* is frozen and :class:`Freezing` applies it. Parameters are
selected

* by **layer group**: the first ``n`` backbone groups, counted from the input (``Backbone.groups``), or
* by **name pattern** over ``model.named_parameters()`` names (``backbone.model.layer1.*``, ``*.bias``):
  shell-style ``fnmatch`` patterns, or ``re:<regex>`` for a regular expression (``re:.*\\.bn\\d\\.weight``),
  finetuning-scheduler style.

Three layers of state, applied together every time any of them changes:

1. ``permanent`` patterns (``model.frozen_params``): frozen for the whole run. A schedule phase that unfreezes
   "everything" (``frozen: 0``) does not re-enable them — re-deriving the trainable set every epoch from the
   groups alone would silently train them again.
2. the phase's frozen group count and its ``freeze`` patterns;
3. the phase's ``trainable`` patterns: parameters that train although their group or a ``freeze`` pattern is
   frozen (BitFit: ``frozen: all`` + ``trainable: ["*.bias"]``). They never override (1).

Norm layers: a BatchNorm (or other norm layer) inside a frozen group, or whose parameters are all frozen, stays
in eval mode while the model trains (``freeze_bn_stats``), so its running statistics do not drift with the
target batches; a ``trainable`` pattern re-enables gradients of the matched parameters only, never the running
statistics of a frozen group. Lightning calls ``model.train()`` at every epoch start and after every
validation, so the model re-applies the modes in its ``train()`` (:meth:`Freezing.apply_norm_modes`).
"""

from __future__ import annotations

import fnmatch
import re
from typing import Iterable, Sequence

from torch import nn

from lit_transfer.compat import NORM_LAYERS
from lit_transfer.errors import TransferConfigError

__all__ = ["Freezing", "Freezable", "matches", "select_parameters", "param_counts", "log_param_counts", "NETWORK"]

#: the submodules whose parameters freezing manages; a source head, a teacher or a discriminator keeps its own
#: ``requires_grad`` (set by the objective that owns it)
NETWORK = ("backbone.", "bottleneck.", "head.")


def matches(name: str, patterns: Iterable[str]) -> bool:
    """Whether a parameter name matches any pattern (``fnmatch``, or ``re:<regex>`` matched in full)."""
    for pattern in patterns:
        if pattern.startswith("re:"):
            if re.fullmatch(pattern[3:], name):
                return True
        elif fnmatch.fnmatchcase(name, pattern):
            return True
    return False


def select_parameters(model: nn.Module, patterns: Sequence[str]) -> list[str]:
    """Names of the network's parameters matching ``patterns``; a pattern that matches nothing is an error
    (a typo would otherwise freeze nothing, silently)."""
    names = [n for n, _ in model.named_parameters() if n.startswith(NETWORK)]
    for pattern in patterns:
        if not any(matches(n, [pattern]) for n in names):
            example = ", ".join(names[:3])
            raise TransferConfigError(f"freeze pattern {pattern!r} matches no parameter of the model (names look "
                                      f"like {example}, ...; use fnmatch patterns such as 'backbone.model.stem.*' "
                                      "or 're:<regex>')")
    return [n for n in names if matches(n, patterns)]


class Freezing:
    """What is frozen now, applied to a model with ``backbone.groups`` (a :class:`TransferClassifier`)."""

    def __init__(self, permanent: Sequence[str] = (), freeze_bn_stats: bool = True):
        self.permanent = tuple(permanent)
        self.freeze_bn_stats = freeze_bn_stats
        self.frozen_groups = 0
        self.freeze: tuple[str, ...] = ()
        self.trainable: tuple[str, ...] = ()
        self._frozen_norms: list[nn.Module] = []

    def set(self, model: nn.Module, groups: int, freeze: Sequence[str] = (), trainable: Sequence[str] = ()) -> bool:
        """Freeze the first ``groups`` backbone groups and the ``freeze`` patterns, except ``trainable``
        patterns (never the permanent ones). Returns whether the set of trainable parameters changed."""
        num_groups = len(model.backbone.groups)
        if not 0 <= groups <= num_groups:
            raise ValueError(f"cannot freeze {groups} groups: backbone '{model.backbone.name}' has {num_groups}")
        self.frozen_groups, self.freeze, self.trainable = groups, tuple(freeze), tuple(trainable)
        return self.apply(model)

    def trainable_names(self, model: nn.Module) -> set[str]:
        """The network parameters that train under the current state."""
        in_frozen_group = {f"backbone.model.{n}" for g in model.backbone.groups[: self.frozen_groups]
                           for n in g.param_names}
        out = set()
        for name, _ in model.named_parameters():
            if not name.startswith(NETWORK) or matches(name, self.permanent):
                continue
            frozen = name in in_frozen_group or matches(name, self.freeze)
            if not frozen or matches(name, self.trainable):
                out.add(name)
        return out

    def apply(self, model: nn.Module) -> bool:
        """Set ``requires_grad`` of every network parameter and the norm layers' modes; whether it changed."""
        trainable = self.trainable_names(model)
        changed = False
        for name, p in model.named_parameters():
            if name.startswith(NETWORK) and p.requires_grad != (name in trainable):
                p.requires_grad_(name in trainable)
                changed = True
        self._frozen_norms = self._find_frozen_norms(model)
        # model.train() (not only apply_norm_modes): norm layers unfrozen now must go back to train mode at once,
        # not at the next train() Lightning happens to call (after validation): a resumed run would differ.
        model.train(model.training)
        self.apply_norm_modes(model)
        return changed

    def _find_frozen_norms(self, model: nn.Module) -> list[nn.Module]:
        mods: list[nn.Module] = []
        for i in range(self.frozen_groups):
            mods += [m for m in model.backbone.group_modules(i) if isinstance(m, NORM_LAYERS)]
        seen = {id(m) for m in mods}
        for prefix in ("backbone", "bottleneck"):
            sub = getattr(model, prefix, None)
            for m in sub.modules() if sub is not None else ():
                params = list(m.parameters(recurse=False))
                if (isinstance(m, NORM_LAYERS) and id(m) not in seen and params
                        and not any(p.requires_grad for p in params)):
                    mods.append(m)
        return mods

    def frozen_norm_modules(self) -> list[nn.Module]:
        """Norm layers that keep their running statistics (eval mode) while the model trains."""
        return list(self._frozen_norms)

    def apply_norm_modes(self, model: nn.Module) -> None:
        """Put frozen norm layers back in eval mode after ``model.train()`` (with ``freeze_bn_stats``)."""
        if model.training and self.freeze_bn_stats:
            for m in self._frozen_norms:
                m.eval()


class Freezable:
    """What a model with a ``backbone`` (layer groups) and a ``freezing`` offers fine-tuning schedules: freeze
    by group and pattern, count groups and parameters, and keep frozen norm layers in eval mode through
    ``train()``. A mixin of :class:`~lit_transfer.module.TransferClassifier`."""

    @property
    def num_groups(self) -> int:
        return len(self.backbone.groups)

    def set_frozen(self, n: int, freeze: tuple[str, ...] = (), trainable: tuple[str, ...] = ()) -> bool:
        """Freeze the first ``n`` backbone layer groups (and ``freeze`` patterns, except ``trainable`` ones);
        see :class:`Freezing`. Returns whether the trainable set changed."""
        changed = self.freezing.set(self, n, freeze, trainable)
        if changed:
            log_param_counts(self, reason=f"frozen {n}/{self.num_groups} backbone groups")
        return changed

    def train(self, mode: bool = True):
        # Lightning (and users) call .train() at the start of every epoch and after validation; a "frozen"
        # BatchNorm left in train mode keeps updating its running statistics, so re-apply eval here.
        super().train(mode)
        freezing = self.__dict__.get("freezing")  # absent while nn.Module.__init__ runs
        if freezing is not None:
            freezing.apply_norm_modes(self)
        return self

    def param_counts(self) -> dict[str, int]:
        """Trainable and total parameters of the network (backbone, bottleneck, head)."""
        return param_counts(self)


def param_counts(model: nn.Module) -> dict[str, int]:
    """Trainable and total parameters of the network (backbone, bottleneck, head)."""
    params = [p for name, p in model.named_parameters() if name.startswith(NETWORK)]
    return {"trainable": sum(p.numel() for p in params if p.requires_grad), "total": sum(p.numel() for p in params)}


def log_param_counts(model, reason: str = "") -> None:
    """Print the counts and send them to the trainer's loggers as ``params/trainable``, ``params/total``."""
    from lit_transfer.compat import attached_trainer
    from lit_transfer.console import say

    counts = param_counts(model)
    say(f"[lit_transfer] trainable params {counts['trainable']:,} / {counts['total']:,} {reason}".rstrip())
    trainer = attached_trainer(model)
    if trainer is not None and trainer.loggers:
        metrics = {f"params/{k}": float(v) for k, v in counts.items()}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
