"""Transfer strategies: schedules (data) and loss modules composed with the model."""

from lit_transfer.strategies.coral import CORAL, coral_loss
from lit_transfer.strategies.dann import DANN, ganin_coefficient, grad_reverse
from lit_transfer.strategies.distill import Distill
from lit_transfer.strategies.l2sp import L2SP
from lit_transfer.strategies.lwf import LwF
from lit_transfer.strategies.mmd import MMD, mk_mmd
from lit_transfer.strategies.multitask import MultiTask
from lit_transfer.strategies.objective import Frozen, Objective
from lit_transfer.strategies.schedule import FinetuningSchedule, GradualUnfreezing, Phase

__all__ = ["FinetuningSchedule", "GradualUnfreezing", "Phase", "L2SP", "Objective", "Frozen", "DANN", "CORAL", "MMD",
           "MultiTask", "Distill", "LwF", "coral_loss", "mk_mmd", "ganin_coefficient", "grad_reverse"]
