"""Callbacks the tests load through the CLI (``class_path: tests.helpers.…``), and shared test helpers."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
import yaml


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


def parsed_config(args: list[str], capsys) -> dict:
    """The config our CLI resolves from ``args`` (parse only: ``--print_config``, nothing trains)."""
    from lit_transfer.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main([*args, "--print_config"])
    out = capsys.readouterr()
    assert exit_.value.code in (0, None), out.err
    return yaml.safe_load(out.out)
