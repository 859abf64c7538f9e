"""The command line, read once: the only scanner of ``--key value`` / ``--key=value`` argument lists.

Everything that needs to know what a command line says (which strategy and protocol configs it names, which
config files it stacks, whether an option is given) asks this module; nothing else in the package scans argv
or reads ``sys.argv`` (``tests/plan/test_command_line.py`` walks the package's AST).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from lit_transfer import configs
from lit_transfer.errors import TransferConfigError

SUBCOMMANDS = ("fit", "validate", "test", "predict")
TOOLS = ("sweep", "report", "rank")  # lit-transfer subcommands that lit_transfer.entry dispatches
CONFIG_FLAGS = ("--config", "-c")
_EVAL_SUBCOMMANDS = ("validate", "test", "predict")
SAVE_DIR_PLACEHOLDER = "<run dir>"  # a logger's save_dir until the run dir exists (tracking.configure_loggers)
_SAVE_DIR_LOGGERS = ("CSVLogger", "TensorBoardLogger")


def process_args() -> list[str]:
    """This process's command-line arguments (``sys.argv[1:]``): the one read of ``sys.argv``."""
    return list(sys.argv[1:])


def options(argv: list[str]) -> Iterator[tuple[int, str, Optional[str]]]:
    """``(index, key, value)`` of every ``--key value`` / ``--key=value`` (value ``None`` for a bare flag)."""
    return _options(argv)


def has_option(argv: list[str], key: str) -> bool:
    """Whether ``--key`` (or ``--key=...``, ``--key.sub...``) is given."""
    return any(k == key or k.startswith(key + ".") for _, k, _ in _options(argv))


def subcommand_index(argv: list[str]) -> Optional[int]:
    """Index of the Lightning subcommand (``fit``, ``test``, ...) in ``argv``; ``None`` when there is none."""
    return next((i for i, arg in enumerate(argv) if arg in SUBCOMMANDS and not _is_value(argv, i)), None)


TARGET_CONFIG_DIRS = ("strategy", "protocol")  # config folders that only describe a target run


@dataclass(frozen=True)
class ConfigFile:
    """A ``--config`` file of a command line and what it is: ``strategy`` / ``protocol`` (only the target run's:
    the configs ``--strategy``/``--protocol`` named, or files in a ``strategy/``/``protocol/`` folder) or
    ``experiment`` (data, model, a user's experiment file)."""

    path: str
    kind: str

    @property
    def target_only(self) -> bool:
        return self.kind in TARGET_CONFIG_DIRS


@dataclass(frozen=True)
class Override:
    """A ``--key value`` / ``--key=value`` of a command line: its key (``model.lr``, ``.init_args.`` left out)
    and its tokens as given."""

    key: str
    tokens: tuple[str, ...]


@dataclass(frozen=True)
class CommandLine:
    """A ``lit-transfer fit|validate|test|predict`` command line, read once into typed parts: the subcommand, the
    config files in order (with their kind) and the other options in order. The source stage is derived from
    these parts (:mod:`lit_transfer.stages`), never by filtering the raw argument list again."""

    subcommand: Optional[str]
    configs: tuple[ConfigFile, ...]
    overrides: tuple[Override, ...]

    @classmethod
    def parse(cls, argv: list[str], strategy_path: Optional[str] = None,
              protocol_path: Optional[str] = None) -> "CommandLine":
        """``argv`` (expanded or not): ``strategy_path``/``protocol_path``, the configs that ``--strategy`` /
        ``--protocol`` expanded to, are marked as such wherever they are."""
        at = subcommand_index(argv)
        subcommand = argv[at] if at is not None else None
        rest = argv[at + 1:] if at is not None else list(argv)
        marked = {str(Path(p).expanduser().resolve()): kind for kind, p in
                  (("strategy", strategy_path), ("protocol", protocol_path)) if p is not None}
        configs_, overrides = [], []
        for i, key, value in _options(rest):
            if key in CONFIG_FLAGS:
                if value is not None:
                    kind = marked.get(str(Path(value).expanduser().resolve()))
                    if kind is None:
                        parent = Path(value).parent.name
                        kind = parent if parent in TARGET_CONFIG_DIRS else "experiment"
                    configs_.append(ConfigFile(value, kind))
                continue
            if not key.startswith("--"):
                continue
            given = rest[i] if (value is None or "=" in rest[i]) else rest[i:i + 2]
            tokens = (given,) if isinstance(given, str) else tuple(given)
            overrides.append(Override(key[2:].replace(".init_args.", "."), tokens))
        return cls(subcommand, tuple(configs_), tuple(overrides))


def read_command_line(args: list[str]) -> tuple[list[str], CommandLine]:
    """A command line as the parser needs it, and read into a :class:`CommandLine`: ``--config`` paths resolved
    (shipped configs from any directory), agents' ``None`` values and loggers' save dirs filled in
    (:func:`prepare_cli_args`), an evaluated checkpoint's run config first (:func:`with_run_config`), then the
    strategy config first and the protocol config after the last ``--config`` (:func:`expand_strategy`,
    :func:`expand_protocol`)."""
    argv = with_run_config(prepare_cli_args(resolve_config_paths(list(args))))
    strategy, configs_dir = _chosen(argv, "strategy")
    protocol, protocol_dir = _chosen(argv, "protocol")
    expanded = expand_protocol(expand_strategy(argv))
    strategy_path = None if strategy is None else str(configs.strategy_config(strategy, configs_dir))
    protocol_path = None if protocol is None else str(configs.named_config("protocol", protocol, protocol_dir))
    return expanded, CommandLine.parse(expanded, strategy_path, protocol_path)


def _options(argv: list[str]):
    """``(index, key, value)`` of every ``--key value`` / ``--key=value`` (value ``None`` for a bare flag)."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("-"):
            key, eq, value = arg.partition("=")
            if not eq:
                nxt = argv[i + 1] if i + 1 < len(argv) else None
                value = None if nxt is None or nxt.startswith("--") else nxt
                if value is not None:
                    yield i, key, value
                    i += 2
                    continue
            yield i, key, value if eq else None
        i += 1


def resolve_config_paths(argv: list[str]) -> list[str]:
    """``--config`` values that do not exist relative to the working directory but name a shipped file
    (``configs/data/digits_shift.yaml``) point to the shipped file: configs and sweeps work from any directory."""
    out = list(argv)
    for i, key, value in _options(argv):
        if key in CONFIG_FLAGS and value is not None:
            if out[i] == key:
                out[i + 1] = configs.resolve(value)
            else:
                out[i] = f"{key}={configs.resolve(value)}"
    return out


def _yaml_mapping(path: str) -> dict:
    """A config file's top level, or ``{}`` when it cannot be read (the parser then reports the problem)."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).expanduser().read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _chosen(argv: list[str], kind: str) -> tuple[Optional[str], Optional[str]]:
    """The ``kind`` config named (``--<kind>`` or ``<kind>:`` of a ``--config`` file; the last one given wins;
    ``null``: none) and the configs folder to look it up in (``--run.configs``, or ``run: {configs: ...}``)."""
    name = configs_dir = None
    for _, key, value in _options(argv):
        if key == f"--{kind}":
            name = value
        elif key == "--run.configs":
            configs_dir = value
        elif key in CONFIG_FLAGS and value is not None:
            data = _yaml_mapping(value)
            if kind in data:
                name = data[kind]
            run = data.get("run")
            if isinstance(run, dict) and run.get("configs") is not None:
                configs_dir = run["configs"]
    if name is not None and str(name).lower() in ("null", "none", ""):
        name = None
    return (None if name is None else str(name)), (None if configs_dir is None else str(configs_dir))


def chosen_strategy(argv: list[str]) -> tuple[Optional[str], Optional[str]]:
    """The strategy (``--strategy`` or ``strategy:`` of a ``--config`` file; the last one given wins) and the
    configs folder to look it up in (``--run.configs``, or ``run: {configs: ...}`` of a ``--config`` file)."""
    return _chosen(argv, "strategy")


def _subcommand_end(argv: list[str]) -> int:
    """Index just after the subcommand (0 when there is none)."""
    return next((i + 1 for i, arg in enumerate(argv) if arg in SUBCOMMANDS and not _is_value(argv, i)), 0)


def expand_strategy(argv: list[str]) -> list[str]:
    """The chosen strategy's config (``configs/strategy/NAME.yaml``) inserted as the FIRST ``--config`` of the
    subcommand, so every other config file and flag overrides it whatever the argument order (``wandb agent``
    passes parameters alphabetically: ``--model.lr`` before ``--strategy``). Unknown name: a one-line error."""
    argv = list(argv)
    name, configs_dir = chosen_strategy(argv)
    if name is None:
        return argv
    path = configs.strategy_config(name, configs_dir)
    at = _subcommand_end(argv)
    return [*argv[:at], "--config", str(path), *argv[at:]]


def expand_protocol(argv: list[str]) -> list[str]:
    """The chosen protocol's config (``configs/protocol/NAME.yaml``, named by ``protocol: NAME`` in a config file
    or ``--protocol NAME``) inserted right after the LAST ``--config``: it wins over the data and model configs
    (a model config's ``max_epochs`` must not undo a benchmark's budget), and the flags given after the configs
    (a sweep's ``${args}``, a user's overrides) win over it. ``--protocol=null``: none. Applied once: a command
    already holding it there is returned as it is. Unknown name: a one-line error."""
    argv = list(argv)
    name, configs_dir = _chosen(argv, "protocol")
    if name is None:
        return argv
    path = configs.named_config("protocol", name, configs_dir)
    at, last = _subcommand_end(argv), None
    for i, key, value in _options(argv):
        if key in CONFIG_FLAGS and value is not None:
            at, last = (i + 2 if argv[i] == key else i + 1), value
    if last is not None and Path(last).expanduser().resolve() == path.resolve():
        return argv
    return [*argv[:at], "--config", str(path), *argv[at:]]


def with_run_config(argv: list[str]) -> list[str]:
    """``validate``/``test``/``predict --ckpt_path <run>/checkpoints/X.ckpt`` without ``--config``: the run's
    saved ``config.yaml`` comes first, so the checkpoint is evaluated on the data (and with the model) it was
    trained with, never on the defaults. A checkpoint that does not exist is a one-line error."""
    at = next((i for i, arg in enumerate(argv) if arg in SUBCOMMANDS and not _is_value(argv, i)), None)
    if at is None or argv[at] not in _EVAL_SUBCOMMANDS:
        return argv
    options = list(_options(argv[at + 1:]))
    ckpt = next((value for _, key, value in reversed(options) if key == "--ckpt_path"), None)
    if ckpt is None or str(ckpt).lower() in ("null", "none", ""):
        return argv
    path = Path(ckpt).expanduser()
    if not path.is_file():
        raise TransferConfigError(f"checkpoint not found: {ckpt}; give an existing checkpoint, e.g. "
                                  "<run dir>/checkpoints/best.ckpt")
    if any(key in CONFIG_FLAGS for _, key, _ in options):
        return argv  # the user says which data and model
    run_config = path.resolve().parent.parent / "config.yaml"
    if not run_config.is_file():
        raise TransferConfigError(f"{ckpt} is not inside a run directory (no {run_config}), so the data it was "
                                  "trained on is unknown; give --config with its data and model configs")
    print(f"[lit_transfer] using the run's config: {run_config}", file=sys.stderr)
    return [*argv[:at + 1], "--config", str(run_config), *argv[at + 1:]]


def _is_value(argv: list[str], i: int) -> bool:
    """Whether ``argv[i]`` is the value of the option before it (``--run.experiment test``)."""
    return i > 0 and argv[i - 1].startswith("-") and "=" not in argv[i - 1]


def _known_keys(parser) -> set[str]:
    """Every ``--key`` the parser accepts, without the dashes (``data.target_shots``, ``model.optimizer``)."""
    return {opt[2:] for opt in getattr(parser, "_option_string_actions", {}) if opt.startswith("--")}


def _domain_fields() -> list[str]:
    import dataclasses

    from lit_transfer.data import DomainSpec

    return [f.name for f in dataclasses.fields(DomainSpec)]


# Options that moved (the old key names the new one in the unknown-key error).
MOVED_KEYS = {"model.feature_cache": "feature_cache.enabled", "model.feature_cache_dtype": "feature_cache.dtype",
              "model.feature_cache_dir": "feature_cache.cache_dir", "model.feature_cache_mb": "feature_cache.memory_mb"}


def unknown_key(key: str, known: set[str]) -> Optional[tuple[str, Optional[str]]]:
    """``(key, closest valid key or None)`` when ``key`` names no option; ``None`` when it is valid (or lies
    below an option that checks its own keys: a class's ``init_args``, a dict-valued option)."""
    import difflib

    key = key.rstrip("+")  # --trainer.callbacks+=...
    if key in known or any(k.startswith(key + ".") for k in known):  # an option, or a group given whole
        return None
    if key in MOVED_KEYS:
        return key, MOVED_KEYS[key]
    parts = key.split(".")
    for i in range(len(parts) - 1, 0, -1):
        head = ".".join(parts[:i])
        if head not in known:
            continue
        if head + ".help" not in known and any(k.startswith(head + ".") for k in known):
            break  # a group (data, model, trainer, checkpoint): the key must be one of its options
        if head in ("data.source", "data.target"):  # a DomainSpec: its fields are known here
            fields = _domain_fields()
            if parts[i] in fields:
                return None
            close = difflib.get_close_matches(parts[i], fields, n=1, cutoff=0.6)
            return key, (f"{head}.{close[0]}" if close else None)
        return None  # below a class-typed or dict-valued option: jsonargparse checks it
    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    return key, (close[0] if close else None)


def _yaml_keys(data, prefix: str, known: set[str]):
    """Dotted keys of a config file's mapping, down to the options the parser knows."""
    for name, value in data.items():
        key = f"{prefix}{name}"
        if key in ("data.source", "data.target") and isinstance(value, dict):
            yield from (f"{key}.{field}" for field in value)
        elif (isinstance(value, dict) and f"{key}.help" not in known
              and any(k.startswith(key + ".") for k in known)):
            yield from _yaml_keys(value, key + ".", known)  # a group: data, model, trainer, checkpoint
        else:
            yield key


def check_keys(parser, argv: list[str]) -> None:
    """Every key on the command line and in every ``--config`` file names an option; otherwise one line with
    the closest valid key. Prefixes are not keys (``--data.target_shot 5`` is not ``data.target_shots``)."""
    known = _known_keys(parser)
    if not known:
        return
    for _, flag, value in _options(argv):
        if flag in CONFIG_FLAGS:
            if value is None:
                continue
            data = _yaml_mapping(value)
            for key in _yaml_keys(data, "", known):
                if key == "subcommand" or key in SUBCOMMANDS:
                    continue
                bad = unknown_key(key, known)
                if bad:
                    hint = f"; did you mean {bad[1]}?" if bad[1] else "; see lit-transfer fit --help"
                    raise TransferConfigError(f"unknown key {bad[0]} in {value}{hint}")
            continue
        if not flag.startswith("--") or flag in ("--help", "--print_config", "--verbose"):
            continue
        bad = unknown_key(flag[2:], known)
        if bad:
            hint = f"; did you mean --{bad[1]}?" if bad[1] else "; see lit-transfer fit --help"
            raise TransferConfigError(f"unknown option --{bad[0]} on the command line{hint}")


def prepare_cli_args(argv: list[str]) -> list[str]:
    """Command-line arguments as the parser needs them; the CLI calls this before parsing.

    * ``--key=None`` (and ``--key None``) become ``null``: ``wandb agent`` renders a parameter value with
      ``str()``, so a sweep's ``null`` arrives as ``None``, which the parser would take for a string.
    * a logger class given without ``save_dir`` (``--trainer.logger=CSVLogger``) gets a placeholder one, which
      :func:`configure_loggers` replaces with the run directory (the parser insists on the required argument).
    """
    out: list[str] = []
    for i, arg in enumerate(argv):
        if arg.startswith("--") and arg.endswith("=None"):
            arg = arg[: -len("None")] + "null"
        elif arg == "None" and i and argv[i - 1].startswith("--") and "=" not in argv[i - 1]:
            arg = "null"
        out.append(arg)
    return _logger_save_dirs(out)


def _logger_save_dirs(argv: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        value = None
        if arg.startswith("--trainer.logger="):
            value, step = arg.split("=", 1)[1], 1
        elif arg == "--trainer.logger" and i + 1 < len(argv):
            value, step = argv[i + 1], 2
        if value is None:
            out.append(arg)
            i += 1
            continue
        out += argv[i : i + step]
        i += step
        given = any(a.startswith(("--trainer.logger.save_dir", "--trainer.logger.init_args.save_dir"))
                    for a in argv[i:])
        if value.rsplit(".", 1)[-1] in _SAVE_DIR_LOGGERS and not given:
            out.append(f"--trainer.logger.init_args.save_dir={SAVE_DIR_PLACEHOLDER}")
    return out


def without_options(argv: list[str], keys: tuple[str, ...]) -> list[str]:
    """``argv`` without the options ``keys`` (``--key value`` and ``--key=value``, their values included)."""
    drop: set[int] = set()
    for i, key, value in _options(argv):
        if key in keys:
            drop.update((i, i + 1) if value is not None and argv[i] == key else (i,))
    return [arg for i, arg in enumerate(argv) if i not in drop]


def set_process_args(args: list[str]) -> None:
    """This process runs ``lit-transfer ARGS`` from now on (a sweep trial forked from the runner), so what reads
    the process's command line (Lightning, W&B) sees the trial's: the one write of ``sys.argv``."""
    sys.argv = ["lit-transfer", *args]
