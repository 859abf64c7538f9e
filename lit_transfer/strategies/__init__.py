"""Transfer strategies: schedules (data) and loss modules composed with the model."""

from lit_transfer.strategies.l2sp import L2SP
from lit_transfer.strategies.schedule import FinetuningSchedule, GradualUnfreezing, Phase

__all__ = ["FinetuningSchedule", "GradualUnfreezing", "Phase", "L2SP"]
