"""Fine-tuning schedules as data: phases that say which layer groups train from which epoch, at which LR.

One callback serves linear probing, partial freezing, freeze→unfreeze, LP-FT and gradual unfreezing::

    trainer:
      callbacks:
        - class_path: lit_transfer.strategies.FinetuningSchedule
          init_args:
            phases:
              - {epoch: 0, frozen: all}               # linear probe: backbone frozen, head trains
              - {epoch: 3, frozen: 0, lr_scale: 0.1}  # then everything, at a tenth of the LR

or, budget-relative (phases that scale with a step budget, so doubling the budget doubles every phase)::

            phases:
              - {progress: 0.0, frozen: all}
              - {progress: 0.25, frozen: 0, lr_scale: 0.2}  # from a quarter of the training budget on

A phase can also select weights by name (``freeze`` / ``trainable``: fnmatch or ``re:`` patterns over
``model.named_parameters()`` names, see :mod:`lit_transfer.freezing`), e.g. BitFit::

              - {epoch: 0, frozen: all, trainable: ["*.bias"]}    # configs/strategy/bitfit.yaml

The schedule only states each phase; :class:`lit_transfer.freezing.Freezing` (``model.freezing``) applies it, so
weights frozen by ``model.frozen_params`` stay frozen through every phase.

Unlike Lightning's ``BackboneFinetuning`` it never adds param groups (the module creates them all up front),
it re-derives the trainable set from the epoch on resume instead of re-freezing, its LR changes survive
resume (``state_dict``), frozen BatchNorm stays frozen, and it keeps DDP ranks in sync across unfreezes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional, Union

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.strategies import DDPStrategy

from lit_transfer.compat import find_unused_parameters
from lit_transfer.errors import TransferConfigError

__all__ = ["Phase", "FinetuningSchedule", "GradualUnfreezing"]


@dataclass
class Phase:
    """From ``epoch`` (or from ``progress``, a fraction of the training budget in optimizer steps) on: the
    first ``frozen`` backbone groups (from the input) are frozen.

    ``frozen`` is a count, ``"all"`` (the whole backbone) or negative (all but the last ``-frozen``).
    ``lr_scale`` multiplies every configured learning rate while the phase lasts. Phases are entered at epoch
    starts; with ``progress``, at the first epoch start at or past that fraction of
    ``trainer.estimated_stepping_batches``. ``freeze`` patterns freeze matching parameters too; ``trainable``
    patterns keep matching parameters training although their group (or a ``freeze`` pattern) is frozen.
    """

    epoch: int = 0
    frozen: Union[int, str] = 0
    lr_scale: float = 1.0
    progress: Optional[float] = None
    freeze: list[str] = field(default_factory=list)
    trainable: list[str] = field(default_factory=list)

    @property
    def start(self) -> float:
        return self.epoch if self.progress is None else self.progress


class FinetuningSchedule(Callback):
    def __init__(self, phases: list[Phase]):
        super().__init__()
        self.phases = sorted((p if isinstance(p, Phase) else Phase(**p) for p in phases), key=lambda p: p.start)
        by_progress = {p.progress is not None for p in self.phases}
        if len(by_progress) > 1:
            raise TransferConfigError("a fine-tuning schedule's phases use either `epoch` or `progress`, not both")
        self.by_progress = by_progress == {True}
        if any(not 0 <= p.progress < 1 for p in self.phases if p.progress is not None):
            raise TransferConfigError("a phase's progress is a fraction of the training budget: 0 <= progress < 1")
        if not self.phases or self.phases[0].start != 0:
            raise TransferConfigError("a fine-tuning schedule needs a phase at epoch 0 (or progress 0); "
                                      "add {epoch: 0, frozen: ...}")
        self.lr_scale = 1.0  # the scale currently applied to the optimizer; restored on resume

    def build_phases(self, num_groups: int) -> list[Phase]:
        """Hook for schedules generated from the backbone's depth (see :class:`GradualUnfreezing`)."""
        return self.phases

    def frozen_count(self, phase: Phase, num_groups: int) -> int:
        frozen = phase.frozen
        if frozen == "all":
            return num_groups
        if isinstance(frozen, str):
            raise TransferConfigError(f"phase at epoch {phase.epoch}: frozen='{frozen}'; use an integer or 'all'")
        n = num_groups + frozen if frozen < 0 else frozen
        if not 0 <= n <= num_groups:
            raise TransferConfigError(
                f"phase at epoch {phase.epoch} freezes {frozen} groups but the backbone has {num_groups} layer "
                f"groups; use frozen: all or a value between -{num_groups} and {num_groups}"
            )
        return n

    def phase_at(self, epoch: int, progress: float = 0.0) -> Phase:
        now = progress if self.by_progress else epoch
        return [p for p in self.phases if p.start <= now][-1]

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        from lit_transfer.freezing import select_parameters

        self.phases = self.build_phases(pl_module.num_groups)
        for phase in self.phases:  # fail before training, not mid-run
            self.frozen_count(phase, pl_module.num_groups)
            select_parameters(pl_module, [*phase.freeze, *phase.trainable])
        if isinstance(trainer.strategy, DDPStrategy):
            # DDP all-reduces only the parameters that required grad when it wrapped the model; one unfrozen
            # later is updated from its local gradient alone and ranks silently diverge. So wrap with
            # everything trainable and let DDP skip the frozen ones each step.
            pl_module.set_frozen(0)
            find_unused_parameters(trainer.strategy)

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Derived from the epoch on every start, resumed runs included: never "re-freeze on resume".
        progress = trainer.global_step / max(1, trainer.estimated_stepping_batches) if self.by_progress else 0.0
        phase = self.phase_at(trainer.current_epoch, progress)
        pl_module.set_frozen(self.frozen_count(phase, pl_module.num_groups), freeze=phase.freeze,
                             trainable=phase.trainable)
        if phase.lr_scale != self.lr_scale:
            pl_module.scale_lr(phase.lr_scale / self.lr_scale)
            self.lr_scale = phase.lr_scale

    def state_dict(self) -> dict:
        return {"lr_scale": self.lr_scale, "phases": [asdict(p) for p in self.phases]}

    def load_state_dict(self, state_dict: dict) -> None:
        # The optimizer state restored with the checkpoint already carries the scaled LRs.
        self.lr_scale = state_dict["lr_scale"]


class GradualUnfreezing(FinetuningSchedule):
    """ULMFiT-style: train the head, then unfreeze one more backbone group, top-down, every ``every_n_epochs``.

    ``start_epoch`` is when the first (deepest) group unfreezes; ``lr_scale`` applies once anything in the
    backbone trains.
    """

    def __init__(self, every_n_epochs: int = 1, start_epoch: int = 1, lr_scale: float = 1.0):
        if every_n_epochs < 1 or start_epoch < 0:
            raise TransferConfigError("GradualUnfreezing needs every_n_epochs >= 1 and start_epoch >= 0")
        self.every_n_epochs, self.start_epoch, self.unfrozen_lr_scale = every_n_epochs, start_epoch, lr_scale
        super().__init__([Phase(epoch=0, frozen="all")])

    def build_phases(self, num_groups: int) -> list[Phase]:
        phases = [Phase(epoch=0, frozen="all")] if self.start_epoch > 0 else []
        for k in range(1, num_groups + 1):
            epoch = self.start_epoch + (k - 1) * self.every_n_epochs
            phases.append(Phase(epoch=epoch, frozen=num_groups - k, lr_scale=self.unfrozen_lr_scale))
        return phases
