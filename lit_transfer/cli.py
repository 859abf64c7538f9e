"""The ``fit``/``validate``/``test``/``predict`` subcommands of ``lit-transfer``: a Lightning CLI that runs every
experiment from stacked YAML configs.

    lit-transfer fit --config configs/data/digits_shift.yaml --config configs/model/small_cnn.yaml \\
                     --strategy finetune --model.weights=runs/.../checkpoints/last.ckpt

``--strategy NAME`` (or ``strategy: NAME`` in a ``--config`` file) applies ``configs/strategy/NAME.yaml`` before
everything else, so every other ``--config`` and ``--key=value`` wins whatever the argument order. A protocol
(``protocol: NAME`` in a ``--config`` file, or ``--protocol NAME``: ``configs/protocol/NAME.yaml``, the budget and
tuning a benchmark's documented numbers used) is applied right after the last ``--config``, so the flags after
the configs still win over it; ``--protocol=null`` leaves it out. Each run gets
its own directory (config, checkpoints, logs, ``result.json``): concurrent sweep trials never collide. After
``fit`` the best checkpoint is tested on both domains and ``result.json`` is written.

The ``sweep``, ``report`` and ``rank`` subcommands live in :mod:`lit_transfer.entry`, which dispatches to this
module; this module never imports them (a sweep trial runs this CLI).
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path
from typing import Optional

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

from lit_transfer import configs, results
from lit_transfer.compat import CompactHelpFormatter, ThrottledProgressBar
from lit_transfer.console import quiet, say
from lit_transfer.checkpointing import AtomicCheckpointIO, Checkpoint
from lit_transfer.callbacks.feature_cache import FeatureCaching
from lit_transfer.callbacks.throughput import Throughput
from lit_transfer.convergence import ValidationCurve
from lit_transfer.data import DomainPairDataModule
from lit_transfer.divergence import DivergenceGuard
from lit_transfer.errors import DIVERGED_EXIT_CODE, TrainingDiverged, TransferConfigError
from lit_transfer.evaluation import SCORE, selection_metric
from lit_transfer.module import TransferClassifier
from lit_transfer.plan.command_line import (SUBCOMMANDS, TOOLS, CommandLine, check_keys, process_args,
                                            read_command_line, subcommand_index)
from lit_transfer.run_outputs import data_notes, fit_clock, print_metrics, save_predictions
from lit_transfer.plan.run import (DEFAULT_RUNS_ROOT, DEFAULT_STAGE_CACHE, make_plan, remove_empty_run_dirs,
                                   resolved_weights)
from lit_transfer.source_stage import resolve_source_stage

__all__ = ["TransferCLI", "main", "expand_strategy", "expand_protocol", "resolve_config_paths", "SUBCOMMANDS"]



def _strategy_help() -> str:
    names = ", ".join(configs.strategy_names()) or "none shipped"
    # one sentence: the help formatter keeps the first sentence of every option's help
    return (f"Strategy (shipped: {names}; or a path to a strategy YAML; or 'strategy: NAME' in a --config "
            "file): its configs/strategy/NAME.yaml is applied first, so every other --config and --key=value "
            "overrides it, whatever the argument order.")


_PROTOCOL_HELP = ("Protocol (configs/protocol/NAME.yaml or a path; or 'protocol: NAME' in a --config file, as the "
                  "DA data configs name their recipe): applied after the last --config, so the flags after the "
                  "configs override it; null: none.")


class RunConfigSaver(SaveConfigCallback):
    """Saves the resolved config as ``<run dir>/config.yaml``; run dirs are unique, so sweeps never collide."""

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.already_saved or not trainer.is_global_zero:
            return
        path = Path(trainer.default_root_dir) / self.config_filename
        if path.exists():  # a resumed run keeps the config it started with and records the new one beside it
            path = path.with_name(f"{path.stem}.{time.strftime('%Y%m%d-%H%M%S')}{path.suffix}")
        path.parent.mkdir(parents=True, exist_ok=True)
        # The trainer's default_root_dir is this run's dir only inside the run; the file keeps the runs root as
        # run.root, so the saved config, given again, starts a sibling run instead of one nested in this run.
        config = self.config.clone()
        config["trainer.default_root_dir"] = None
        config["protocol"] = None  # already applied: its values are in the file (again, it would undo overrides)
        # skip_check: the config was validated when parsed; re-checking costs more than writing it.
        self.parser.save(config, str(path), skip_none=False, overwrite=True, multifile=False, skip_check=True)
        self.already_saved = True


_SUBCOMMAND_KWARG = "lit_transfer_subcommand"  # our marker in parser_kwargs: which subcommand a parser serves


class TransferCLI(LightningCLI):
    """The Lightning CLI of lit_transfer. Public additions: ``command`` (the :class:`CommandLine` read once),
    ``subcommand_parsers`` (name → parser) and ``fit_parser`` (what config and stage hashes are computed with)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("seed_everything_default", 0)
        parser_kwargs = dict(kwargs.pop("parser_kwargs", None) or {})
        parser_kwargs.setdefault("description", "lit_transfer: transfer-learning experiments. Besides "
                                 "fit/validate/test/predict: `lit-transfer sweep FILE` runs a W&B sweep file offline, "
                                 "`lit-transfer report DIR` compares strategies with scratch, "
                                 "`lit-transfer rank` scores candidate sources before fine-tuning.")
        # jsonargparse gives every subcommand parser the main parser's formatter class
        parser_kwargs.setdefault("formatter_class", CompactHelpFormatter)
        self.built_subcommands = subcommands_to_build(process_args() if kwargs.get("args") is None else kwargs["args"])
        for name in self.built_subcommands:  # per-subcommand parser_kwargs: LightningCLI passes them to init_parser
            sub = dict(parser_kwargs.get(name) or {})
            sub[_SUBCOMMAND_KWARG] = name
            sub.setdefault("usage", f"lit-transfer {name} [-h] [-c CONFIG] [--strategy NAME] [--print_config] "
                                    "[--KEY VALUE ...]")
            parser_kwargs[name] = sub
        kwargs["parser_kwargs"] = parser_kwargs
        kwargs.setdefault("save_config_callback", RunConfigSaver)
        kwargs.setdefault("auto_configure_optimizers", False)  # the module builds its own param groups
        kwargs.setdefault(
            "trainer_defaults",
            {"max_epochs": 10, "log_every_n_steps": 10, "enable_model_summary": False, "num_sanity_val_steps": 0},
        )
        self._started = time.time()
        self.command = CommandLine(None, (), ())
        self.subcommand_parsers: dict[str, LightningArgumentParser] = {}
        super().__init__(TransferClassifier, DomainPairDataModule, *args, **kwargs)

    def subcommands(self) -> dict[str, set[str]]:
        """Lightning's subcommands, only those this command line needs (``built_subcommands``: building a parser
        costs a sweep trial ~0.1 s each); ``validate``/``test`` leave Trainer's ``verbose`` out: ``--verbose``
        is ours (third-party console lines), and their metrics are always printed, each once (``print_metrics``)."""
        subs = LightningCLI.subcommands()
        built = getattr(self, "built_subcommands", SUBCOMMANDS)
        return {name: (skip | {"verbose"} if name in ("validate", "test") else skip) for name, skip in subs.items()
                if name in built}

    def init_parser(self, **kwargs) -> LightningArgumentParser:
        subcommand = kwargs.pop(_SUBCOMMAND_KWARG, None)
        parser = super().init_parser(**kwargs)
        if subcommand is not None:
            self.subcommand_parsers[subcommand] = parser
        return parser

    @property
    def fit_parser(self) -> LightningArgumentParser:
        """The parser of ``fit`` (``run=False``: the only parser): config hashes and source stages use it."""
        return self.subcommand_parsers.get("fit", self.parser)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--strategy", type=Optional[str], default=None, help=_strategy_help())
        parser.add_argument("--protocol", type=Optional[str], default=None, help=_PROTOCOL_HELP)
        parser.add_argument("--run.experiment", type=str, default="experiment", help="Experiment name (W&B group).")
        parser.add_argument("--run.strategy", type=str, default="custom", help="Strategy name, set by strategy configs.")
        parser.add_argument("--run.root", type=Optional[str], default=None,
                            help=f"Parent of auto-named run dirs <root>/<experiment>/<strategy>/<stamp> (null: "
                                 f"trainer.default_root_dir if given, else ./{DEFAULT_RUNS_ROOT}).")
        parser.add_argument("--run.dir", type=Optional[str], default=None,
                            help="This run's directory (fresh); overrides run.root and trainer.default_root_dir.")
        parser.add_argument("--run.configs", type=Optional[str], default=None,
                            help="Configs folder that --strategy NAME and the source stage read strategy/NAME.yaml "
                                 "from (null: the shipped configs).")
        parser.add_argument("--run.stage_cache", type=str, default=DEFAULT_STAGE_CACHE,
                            help="Folder of shared source stages (model.weights=source); where it is never "
                                 "changes a result.")
        parser.add_argument("--run.transfer", type=bool, default=True,
                            help="Load model.weights. false: the scratch baseline (random init, set by the scratch "
                                 "strategy), whatever model.weights the experiment names.")
        parser.add_argument("--run.test_after_fit", type=bool, default=True, help="Test the best checkpoint after fit.")
        parser.add_argument("--run.source_seed", type=Optional[int], default=None,
                            help="Seed of the source stage (model.weights=source). null: the run's seed, so each "
                                 "seed of a sweep has its own source model and the intervals cover its variance; "
                                 "an integer shares one source model across seeds.")
        parser.add_argument("--run.threads", type=Optional[int], default=None,
                            help="Intra-op CPU threads (torch.set_num_threads); null: torch's default. Recorded in "
                                 "result.json: results are bit-identical only at the same thread count.")
        parser.add_argument("--verbose", type=bool, default=False,
                            help="Show third-party log lines and warnings (off by default: lit_transfer's own "
                                 "lines and the progress bar only).")
        parser.add_lightning_class_args(Checkpoint, "checkpoint")
        parser.add_lightning_class_args(FeatureCaching, "feature_cache")
        parser.set_defaults(
            {"checkpoint.monitor": "val_acc", "checkpoint.mode": "max", "checkpoint.save_last": True,
             "checkpoint.filename": "best"}
        )
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.in_chans", "model.in_chans", apply_on="instantiate")

    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        if args is None:
            args = process_args()
        if isinstance(args, (list, tuple)):
            # Agents' None values and loggers given without a save_dir (filled in with the run dir) parse.
            args, self.command = read_command_line(args)
            at = subcommand_index(args)
            sub_parser = self.subcommand_parsers.get(args[at]) if at is not None else parser
            check_keys(sub_parser or parser, args[at + 1:] if at is not None else args)
        with warnings.catch_warnings():  # the arguments are passed explicitly on purpose (strategy expanded)
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
            super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        cfg = self.config[subcommand] if subcommand else self.config
        quiet(bool(cfg.get("verbose")))  # before the trainer exists: its "GPU available" lines are noise
        _check_numbers(cfg)  # before the seed is applied

    def instantiate_trainer(self, **kwargs) -> Trainer:
        # The throttled progress bar unless the config turns the bar off or brings its own.
        config_init = self.config_init[self.subcommand] if self.subcommand else self.config_init
        trainer_cfg = config_init.get("trainer") or {}
        callbacks = trainer_cfg.get("callbacks") or []
        callbacks = list(callbacks) if isinstance(callbacks, (list, tuple)) else [callbacks]
        has_bar = any(isinstance(c, ProgressBar) for c in callbacks)
        if trainer_cfg.get("enable_progress_bar") is None and not has_bar and not sys.stdout.isatty():
            # Not a terminal (a sweep trial's log, CI): a bar is carriage-return spam there.
            kwargs["enable_progress_bar"] = False
        elif (trainer_cfg.get("enable_progress_bar") is not False and "callbacks" not in kwargs and not has_bar):
            kwargs["callbacks"] = [*callbacks, ThrottledProgressBar()]
        # Every fit records its val curve and images/s, and stops at its first non-finite loss (unless configured).
        for kind in (ValidationCurve, Throughput, DivergenceGuard) if self.subcommand == "fit" else ():
            if not any(isinstance(c, kind) for c in callbacks):
                kwargs["callbacks"] = [*kwargs.get("callbacks", callbacks), kind()]
        # Checkpoints written straight to their file (lit_transfer.checkpointing), unless the config brings its
        # own plugins or a strategy that saves sharded checkpoints its own way.
        distributed = trainer_cfg.get("strategy", "auto")  # Lightning's trainer.strategy: how processes share work
        if (not trainer_cfg.get("plugins") and "plugins" not in kwargs and isinstance(distributed, str)
                and distributed.split("_")[0] in ("auto", "ddp", "single")):
            kwargs["plugins"] = [AtomicCheckpointIO()]
        return super().instantiate_trainer(**kwargs)

    # ---------------------------------------------------------------- run dir
    def before_instantiate_classes(self) -> None:
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        self.plan = make_plan(cfg, self.command, self.subcommand)
        self.run_dir = self.plan.run_dir
        self.stage_wait_s = 0.0  # time spent training or waiting for the source stage: not this run's training
        if self.plan.from_source_stage:
            waited = time.time()
            self.plan = resolved_weights(self.plan, cfg, resolve_source_stage(self.command, self.fit_parser, cfg))
            self.stage_wait_s = time.time() - waited
        from lit_transfer.tracking import configure_loggers

        configure_loggers(cfg, self.run_dir)

    # ---------------------------------------------------------------- after fit
    def before_fit(self) -> None:
        from lit_transfer.tracking import push_config_to_loggers

        push_config_to_loggers(self.trainer, self.parser, self.config[self.subcommand])

    def after_predict(self) -> None:
        if self.trainer.predict_loop.predictions and self.trainer.is_global_zero:
            save_predictions(self.run_dir, self.trainer.predict_loop.predictions, self.datamodule)

    def test(self, model: LightningModule, verbose: bool = True, **kwargs) -> list:
        """``trainer.test``, its metrics printed once each (Lightning's table repeats every metric under every
        dataloader's column, which reads as if each domain had been tested twice)."""
        out = self.trainer.test(model, verbose=False, **kwargs)
        if verbose and self.trainer.is_global_zero:
            print_metrics("test", out)
        return out

    def validate(self, model: LightningModule, verbose: bool = True, **kwargs) -> list:
        """``trainer.validate``, its metrics printed once each."""
        out = self.trainer.validate(model, verbose=False, **kwargs)
        if verbose and self.trainer.is_global_zero:
            print_metrics("validation", out)
        return out

    def fit(self, model: LightningModule, **kwargs) -> None:
        """``trainer.fit``; a diverged run leaves ``result.json`` with ``"status": "diverged"`` and re-raises."""
        # fit_time_s/fit_cpu_s: fit and its test, without building the data (a trial's fixed cost: data_time_s)
        self.fit_started = (time.perf_counter(), time.process_time(), getattr(self.datamodule, "load_time", None))
        try:
            self.trainer.fit(model, **kwargs)
        except TrainingDiverged as err:
            if self.trainer.is_global_zero:
                self._write_failed_result("diverged", str(err), divergence=err.record())
            raise

    def _write_failed_result(self, status: str, error: str, **extra) -> None:
        """A result that reports and sweeps count as failed (never averaged): no metrics, no checkpoint."""
        cfg = self.config["fit"]
        result = results.build_result(
            cfg=cfg, config_hash=results.config_hash(self.fit_parser, cfg),
            split_hash=self.datamodule.split_hash(), metrics={}, params=self.model.param_counts(),
            wall_time_s=time.time() - self._started, run_dir=self.run_dir, checkpoint=None,
        )
        result.update(status=status, error=error, **fit_clock(self), **extra)
        results.write_result(self.run_dir, result)
        print(f"run dir: {self.run_dir}")

    def after_fit(self) -> None:
        cfg = self.config["fit"]
        trainer, model, dm = self.trainer, self.model, self.datamodule
        if trainer.global_step == 0:  # e.g. trainer.limit_train_batches or max_steps left nothing to train
            raise TransferConfigError("fit trained zero steps, so there is no result: check trainer.max_epochs, "
                                      "trainer.max_steps, trainer.limit_train_batches and the train split's size")
        ckpt = None
        checkpoint = trainer.checkpoint_callback
        if checkpoint is not None and not trainer.fast_dev_run:
            ckpt = checkpoint.best_model_path or checkpoint.last_model_path or None
        # Validation metrics of the last epoch; trainer.test() below replaces callback_metrics.
        fit_metrics = results.scalar_metrics(trainer.callback_metrics)
        if checkpoint is not None and checkpoint.best_model_score is not None:  # the selection score's best
            fit_metrics[f"{SCORE if checkpoint.monitor == SCORE else 'val_acc'}_best"] = float(checkpoint.best_model_score)
        # Read before testing: loading the best checkpoint restores the callback's state as of that checkpoint.
        curve = next((c.summary() for c in trainer.callbacks if isinstance(c, ValidationCurve)), None)
        speed = next((c.summary() for c in trainer.callbacks if isinstance(c, Throughput)), {})
        test_metrics: dict = {}
        if cfg.run.test_after_fit:
            out = self.test(model, datamodule=dm, ckpt_path=ckpt, verbose=True)
            for d in out:
                test_metrics.update(d)
        if not trainer.is_global_zero:
            return
        metrics = {**fit_metrics, **results.scalar_metrics(test_metrics)}
        counts = dm.labelled_counts() if hasattr(dm, "labelled_counts") else {}
        if counts and model.selection_domain() != "target":  # target val labels never chose anything
            counts["target_val"] = 0
        result = results.build_result(
            cfg=cfg,
            config_hash=results.config_hash(self.fit_parser, cfg),
            split_hash=dm.split_hash(),
            metrics=metrics,
            params=model.param_counts(),
            wall_time_s=time.time() - self._started,
            run_dir=self.run_dir,
            checkpoint=ckpt or (checkpoint.last_model_path if checkpoint else None),
            steps=trainer.global_step,
            labels={**counts, "total": sum(counts.values())} if counts else None,
            extra={**(curve or {}), **speed, **results.compared(model, dm, self.plan.from_source_stage),
                   "stage_wait_s": round(getattr(self, "stage_wait_s", 0.0), 3), **fit_clock(self), **data_notes(dm)},
        )
        path = results.write_result(self.run_dir, result)
        from lit_transfer.tracking import push_result_to_loggers

        push_result_to_loggers(trainer, result)
        say(f"[lit_transfer] result: {path}")
        print(f"run dir: {self.run_dir}")


def subcommands_to_build(args) -> tuple[str, ...]:
    """The subcommand parsers a command line needs: ``fit`` (config and stage hashes use its parser) and the
    subcommand it runs, when it starts with one (``lit-transfer fit ...``, every sweep trial); all of them
    otherwise (``--help`` lists them, an unknown subcommand's error names them)."""
    if isinstance(args, (list, tuple)) and args and args[0] in SUBCOMMANDS:
        return tuple(dict.fromkeys(("fit", args[0])))
    return SUBCOMMANDS


def _check_numbers(cfg) -> None:
    """Range checks of the trainer's, the seed's and the optimizer's numbers (``data.*``/``model.*`` check
    themselves when instantiated)."""
    from lit_transfer import validation

    validation.check_trainer(cfg.trainer)
    validation.check_seed("seed_everything", cfg.get("seed_everything"))
    for key in ("optimizer", "lr_scheduler"):
        validation.check_init_args(f"model.{key}", cfg.model.get(key))


def _user_error(err: BaseException, kind: type = TransferConfigError) -> Optional[str]:
    """The one-line message of a ``kind`` exception anywhere in the exception chain."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, kind):
            return str(err).splitlines()[0]
        err = err.__cause__ or err.__context__
    return None


def main(argv: Optional[list[str]] = None) -> None:
    """``lit-transfer fit|validate|test|predict ...`` (sweep trials call this directly)."""
    argv = process_args() if argv is None else list(argv)
    if argv and argv[0] in TOOLS:  # this module sits below them (a sweep trial runs it): no import of them here
        print(f"lit-transfer: error: '{argv[0]}' is dispatched by lit_transfer.entry.main (the lit-transfer "
              "command), not lit_transfer.cli.main", file=sys.stderr)
        raise SystemExit(2)
    try:
        TransferCLI(args=argv)
    except (KeyboardInterrupt, SystemExit):
        remove_empty_run_dirs()
        raise
    except BaseException as err:  # noqa: BLE001 - turn user errors into one line, re-raise the rest
        remove_empty_run_dirs()
        diverged = _user_error(err, TrainingDiverged)
        message = diverged or _user_error(err)
        if message is None:
            raise
        print(f"lit-transfer: error: {message}", file=sys.stderr)
        raise SystemExit(DIVERGED_EXIT_CODE if diverged else 2) from None
