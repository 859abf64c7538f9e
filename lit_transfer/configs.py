"""Where the shipped configs and sweep files are: inside the installed package, or the repo in a checkout.

``pip install lit-transfer`` ships ``configs/`` and ``sweeps/`` as package data (``lit_transfer/configs``,
``lit_transfer/sweeps``); an editable install or a checkout reads the repo's top-level folders. A path that
does not exist relative to the working directory but names a shipped file (``configs/data/digits_shift.yaml``
or ``data/digits_shift.yaml``) resolves to the shipped file, so configs and sweeps work from any directory.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

__all__ = ["shipped_root", "resolve", "config_names", "named_config", "strategy_names", "strategy_config"]

_KINDS = ("configs", "sweeps")


def shipped_root(kind: str = "configs") -> Path | None:
    """The folder of shipped ``configs`` or ``sweeps``; ``None`` if this installation has none."""
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}")
    packaged = Path(str(resources.files("lit_transfer") / kind))  # a wheel install
    if packaged.is_dir():
        return packaged
    checkout = Path(__file__).resolve().parent.parent / kind  # an editable install or a source checkout
    return checkout if checkout.is_dir() else None


def resolve(path: str | os.PathLike, kind: str = "configs") -> str:
    """``path`` itself if it exists, else the shipped file it names (``[configs/]data/x.yaml``), else ``path``."""
    text = str(path)
    if Path(text).expanduser().exists():
        return text
    root = shipped_root(kind)
    if root is None:
        return text
    relative = Path(text)
    if relative.parts and relative.parts[0] == kind:
        relative = Path(*relative.parts[1:])
    candidate = root / relative
    return str(candidate) if not relative.is_absolute() and candidate.is_file() else text


def config_names(kind: str, root: str | os.PathLike | None = None) -> list[str]:
    """Names of the configs in ``<root>/<kind>`` (``strategy``, ``protocol``; default root: the shipped configs)."""
    root = Path(root).expanduser() if root is not None else shipped_root("configs")
    return sorted(p.stem for p in (root / kind).glob("*.yaml")) if root else []


def strategy_names(root: str | os.PathLike | None = None) -> list[str]:
    """Names of the strategy configs in ``<root>/strategy`` (default: the shipped configs)."""
    return config_names("strategy", root)


def named_config(kind: str, name: str, root: str | os.PathLike | None = None) -> Path:
    """``<root>/<kind>/<name>.yaml`` (default root: the shipped configs), or ``name`` itself when it is a path
    to a YAML file; otherwise a one-line error naming the known configs of that kind."""
    from lit_transfer.errors import TransferConfigError

    as_path = Path(name).expanduser()
    if as_path.suffix in (".yaml", ".yml") and as_path.is_file():
        return as_path.resolve()
    base = Path(root).expanduser() if root is not None else shipped_root("configs")
    path = base / kind / f"{name}.yaml" if base else None
    if path is None or not path.is_file():
        where = f" in {base / kind}" if root is not None and base is not None else ""
        raise TransferConfigError(f"unknown {kind} '{name}'{where}; known: {', '.join(config_names(kind, root))}"
                                  f" (or give a path to a {kind} YAML)")
    return path


def strategy_config(name: str, root: str | os.PathLike | None = None) -> Path:
    """``<root>/strategy/<name>.yaml`` (default root: the shipped configs), or ``name`` itself when it is a path
    to a YAML file; otherwise a one-line error naming the known strategies."""
    return named_config("strategy", name, root)
