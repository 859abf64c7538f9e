"""Callbacks the tests load through the CLI (``class_path: tests.helpers.…``)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch


class DumpRankWeights(L.Callback):
    """Saves every rank's weights at the end of training (and rank 0's at the start) for comparison."""

    def __init__(self, dirpath: str):
        self.dirpath = Path(dirpath)

    def on_train_start(self, trainer, pl_module):
        self.dirpath.mkdir(parents=True, exist_ok=True)
        if trainer.global_rank == 0:
            torch.save({k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()},
                       self.dirpath / "rank0_start.pt")

    def on_train_end(self, trainer, pl_module):
        torch.save({k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()},
                   self.dirpath / f"rank{trainer.global_rank}.pt")
