"""The run plan: what a ``fit``/``validate``/``test``/``predict`` run is, decided once from the parsed config.

:func:`make_plan` takes the parsed config and the :class:`~lit_transfer.plan.command_line.CommandLine`, makes
the run directory, fixes threads and seeds, applies the scratch rule to the weights, and returns a
:class:`RunPlan`; the CLI, the source stage and the result record take its values instead of re-reading the
config or the command line.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

from lit_transfer.errors import TransferConfigError
from lit_transfer.plan.command_line import CommandLine
from lit_transfer.plan.weights import File, Random, SourceStage, Weights, parse_weights

__all__ = ["RunPlan", "make_plan", "runs_root", "RUN_DIR_ENV", "DEFAULT_RUNS_ROOT", "DEFAULT_STAGE_CACHE",
           "remove_empty_run_dirs"]

RUN_DIR_ENV = "LIT_TRANSFER_RUN_DIR"  # shared with DDP worker processes, which re-run the same command
DEFAULT_RUNS_ROOT = "runs"
DEFAULT_STAGE_CACHE = "~/.cache/lit_transfer/stages"
_created: list[Path] = []  # run dirs this process made: removed again if the run fails before writing anything


@dataclass(frozen=True)
class RunPlan:
    """One run, decided once. ``weights``: what the model loads (the scratch rule applied; a
    :class:`~lit_transfer.plan.weights.SourceStage` until :meth:`with_weights` gives the stage's checkpoint);
    ``from_source_stage``: the weights are the experiment's source stage."""

    subcommand: Optional[str]
    command: CommandLine
    run_dir: Path
    experiment: str
    strategy: str
    weights: Weights
    from_source_stage: bool
    seed: Optional[int]
    source_seed: int
    threads: int

    def with_weights(self, weights: Weights) -> "RunPlan":
        return replace(self, weights=weights)

    @property
    def weights_origin(self) -> Optional[str]:
        """``source stage`` for a stage's checkpoint; otherwise the backbone says (``None`` here)."""
        return "source stage" if self.from_source_stage else None


def make_plan(cfg, command: CommandLine, subcommand: Optional[str]) -> RunPlan:
    """The plan of the run ``cfg`` describes; ``cfg`` is completed in place with what was decided (run dir,
    checkpoint dir, threads, seeds, the weights the scratch rule leaves), so ``config.yaml`` records what ran."""
    from lit_transfer.console import say

    run_dir = make_run_dir(cfg)
    cfg.trainer.default_root_dir = str(run_dir)  # Lightning's logs and checkpoints go into the run dir
    cfg.checkpoint.dirpath = str(run_dir / "checkpoints")
    fix_threads_and_seeds(cfg)
    weights = parse_weights(cfg.model.get("weights"))
    if not cfg.run.transfer:
        # The scratch baseline of an experiment that names its weights once for every strategy (a sweep's
        # --model.weights=source): same architecture, random init. The saved config records what ran.
        if not isinstance(weights, (Random, SourceStage)):  # any other file or keyword was meant to be loaded
            say(f"[lit_transfer] warning: model.weights={weights} has no effect: strategy "
                f"{cfg.run.strategy} trains from random init (run.transfer: false)")
        weights = Random()
        cfg.model.weights = None
    seed = cfg.get("seed_everything")
    return RunPlan(subcommand=subcommand, command=command, run_dir=run_dir, experiment=cfg.run.experiment,
                   strategy=cfg.run.strategy, weights=weights, from_source_stage=isinstance(weights, SourceStage),
                   seed=seed if isinstance(seed, int) else None, source_seed=cfg.run.source_seed,
                   threads=cfg.run.threads)


def resolved_weights(plan: RunPlan, cfg, stage_checkpoint: Path) -> RunPlan:
    """The plan with the source stage's checkpoint as its weights (and ``cfg.model.weights`` pointing at it)."""
    cfg.model.weights = str(stage_checkpoint)
    return plan.with_weights(File(Path(stage_checkpoint)))


def runs_root(cfg) -> Path:
    """Parent of auto-named run dirs: ``run.root``, else ``trainer.default_root_dir`` (Lightning's name for
    it), else ``./runs``. Both given and different: a one-line error (which one was meant is unclear)."""
    root, trainer_root = cfg.run.root, cfg.trainer.get("default_root_dir")
    if root and trainer_root and Path(root).expanduser().resolve() != Path(trainer_root).expanduser().resolve():
        raise TransferConfigError(f"run.root ({root}) and trainer.default_root_dir ({trainer_root}) both name "
                                  "the runs root; give one of them")
    return Path(root or trainer_root or DEFAULT_RUNS_ROOT).expanduser()


def make_run_dir(cfg) -> Path:
    """This run's directory: ``run.dir`` (fresh, unless resuming), a DDP worker's rank-0 dir, or a new
    ``<runs root>/<experiment>/<strategy>/<stamp>-<id>``. Directories made here are removed again by
    :func:`remove_empty_run_dirs` when the run fails before writing anything."""
    inherited = os.environ.get(RUN_DIR_ENV)
    if inherited and os.environ.get("LOCAL_RANK", "0") != "0":
        return Path(inherited)  # a DDP worker: same run as rank 0
    if cfg.run.dir:
        trainer_root = cfg.trainer.get("default_root_dir")
        if trainer_root and Path(trainer_root).resolve() != Path(cfg.run.dir).resolve():
            raise TransferConfigError(f"run.dir ({cfg.run.dir}) and trainer.default_root_dir "
                                      f"({cfg.trainer.default_root_dir}) both given: run.dir is this run's "
                                      "directory, trainer.default_root_dir the parent of auto-named ones; "
                                      "give one of them")
        run_dir = Path(cfg.run.dir)
        if (run_dir / "result.json").exists() and not cfg.get("ckpt_path"):
            raise TransferConfigError(f"run dir {run_dir} already holds a result; pick a new --run.dir")
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        root = runs_root(cfg)
        cfg.run.root = str(root)  # recorded in config.yaml: where this run's siblings are
        run_dir = root / cfg.run.experiment / cfg.run.strategy / f"{stamp}-{uuid.uuid4().hex[:6]}"
    new = [p for p in (run_dir, *run_dir.parents) if not p.exists()]
    run_dir.mkdir(parents=True, exist_ok=True)
    _created.extend(reversed(new))  # parents first, so popping removes the deepest first
    os.environ[RUN_DIR_ENV] = str(run_dir)
    return run_dir


def remove_empty_run_dirs() -> None:
    """A run that failed before writing anything leaves no empty directory behind (nor empty parents)."""
    while _created:
        path = _created.pop()
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()


def fix_threads_and_seeds(cfg) -> None:
    """Intra-op threads set (or read) once and recorded; the labelled examples drawn, the split (when
    ``data.split_seed`` is null) and the source stage follow the run's seed unless set; checkpoints monitor the
    selection metric (``val_acc``, or ``target/val_score`` under a label-free ``model.selection``)."""
    import torch

    from lit_transfer.evaluation import SCORE, selection_metric

    if cfg.run.threads is not None:
        torch.set_num_threads(cfg.run.threads)
    cfg.run.threads = torch.get_num_threads()
    # Seeds then cover the variance of which examples were drawn; the same seed gives every strategy the
    # same examples (paired comparisons, same split_hash).
    if "shots_seed" in cfg.data and cfg.data.shots_seed is None and isinstance(cfg.seed_everything, int):
        cfg.data.shots_seed = cfg.seed_everything
    # split_seed: null (the DA benchmarks): each seed draws its own split too (halves, train/val/test)
    if "split_seed" in cfg.data and cfg.data.split_seed is None and isinstance(cfg.seed_everything, int):
        cfg.data.split_seed = cfg.seed_everything
    cfg.run.source_seed = source_seed(cfg)  # recorded: one source model per seed unless set
    # A label-free selection logs its score as target/val_score (not an accuracy): checkpoints follow it.
    monitor = cfg.checkpoint.get("monitor")
    if monitor in ("val_acc", SCORE) and "selection" in cfg.model:
        cfg.checkpoint.monitor = selection_metric(cfg.model.selection)


def source_seed(cfg) -> int:
    """The seed a run's source stage trains with: ``run.source_seed`` when set, else the run's own seed, so each
    seed of a sweep has its own source model (its runs share it; the intervals cover the source model's variance)."""
    seed = cfg.run.get("source_seed")
    if seed is None:
        seed = cfg.get("seed_everything")
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else 0
