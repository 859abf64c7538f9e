"""Transfer strategies: schedules (data) and loss modules composed with the model."""

from lit_transfer.strategies.cdan import CDAN
from lit_transfer.strategies.coral import CORAL, coral_loss
from lit_transfer.strategies.dann import DANN, ganin_coefficient, grad_reverse
from lit_transfer.strategies.distill import Distill
from lit_transfer.strategies.l2sp import L2SP, Regularizer
from lit_transfer.strategies.lwf import LwF
from lit_transfer.strategies.lr import CosineDecayLR, InverseDecayLR
from lit_transfer.strategies.mcc import MCC, mcc_loss
from lit_transfer.strategies.mmd import MMD, mk_mmd
from lit_transfer.strategies.multitask import MultiTask
from lit_transfer.strategies.objective import Frozen, LossTerm, Objective, Step
from lit_transfer.strategies.schedule import FinetuningSchedule, GradualUnfreezing, Phase

__all__ = ["FinetuningSchedule", "GradualUnfreezing", "Phase", "L2SP", "Regularizer", "Objective", "LossTerm", "Step", "Frozen",
           "DANN", "CDAN", "MCC", "CORAL", "MMD", "MultiTask", "Distill", "LwF", "InverseDecayLR", "CosineDecayLR", "coral_loss",
           "mk_mmd", "mcc_loss", "ganin_coefficient", "grad_reverse"]
