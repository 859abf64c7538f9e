"""Where a model's starting weights come from, decided once: ``model.weights`` parsed into a typed value.

    None / "null" / "none" / "random"     -> Random()
    "pretrained" | "hub" | "imagenet"     -> Hub(word)        timm's pretrained weights (or a package's copy)
    "source"                              -> SourceStage()    the experiment's source stage, trained once
    any other string or path              -> File(path)       .safetensors/.pth/.bin or a lit_transfer .ckpt

:func:`parse_weights` is the only place that reads the string; everything downstream (backbone, source head,
distillation teacher, the CLI's scratch rule, report and ranking) takes the value.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Union

__all__ = ["Random", "Hub", "File", "SourceStage", "Weights", "parse_weights", "HUB_WORDS", "WEIGHT_SUFFIXES",
           "WEIGHTS_CHOICES"]

HUB_WORDS = ("pretrained", "hub", "imagenet")
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
_RANDOM_WORDS = ("null", "none", "", "random")
WEIGHTS_CHOICES = (f"a weights file ({', '.join(WEIGHT_SUFFIXES)}), one of {', '.join(HUB_WORDS)}, "
                   "'source' or null")  # what model.weights may be, for error messages


@dataclass(frozen=True)
class Random:
    """Random init: training from scratch."""

    def __str__(self) -> str:
        return "random"

    @property
    def config_value(self) -> None:
        return None


@dataclass(frozen=True)
class Hub:
    """timm's pretrained weights for the backbone's tag (``word``: how the config spelled it)."""

    word: str = "pretrained"

    def __str__(self) -> str:
        return self.word

    @property
    def config_value(self) -> str:
        return self.word


@dataclass(frozen=True)
class File:
    """A local weights file: ``.safetensors``/``.pth``/``.bin`` or a lit_transfer ``.ckpt``."""

    path: Path

    def __str__(self) -> str:
        return str(self.path)

    @property
    def config_value(self) -> str:
        return str(self.path)

    @property
    def plausible(self) -> bool:
        """Named like a weights file or existing: otherwise a misspelled keyword (``pretraind``) is likelier."""
        return self.path.name.endswith(WEIGHT_SUFFIXES) or self.path.exists()

    @property
    def is_checkpoint(self) -> bool:
        """A Lightning checkpoint (may carry a lit_transfer source head)."""
        return self.path.suffix == ".ckpt"


@dataclass(frozen=True)
class SourceStage:
    """The experiment's source stage (trained once, content-addressed); the CLI resolves it to a :class:`File`."""

    def __str__(self) -> str:
        return "source"

    @property
    def config_value(self) -> str:
        return "source"


Weights = Union[Random, Hub, File, SourceStage]


def parse_weights(value) -> Weights:
    """``model.weights`` (a config string, a path, ``None`` or an already parsed value) as a :data:`Weights`."""
    if isinstance(value, (Random, Hub, File, SourceStage)):
        return value
    if value is None:
        return Random()
    if isinstance(value, os.PathLike):
        return File(Path(os.fspath(value)).expanduser())
    text = str(value).strip()
    if text.lower() in _RANDOM_WORDS:
        return Random()
    if text.lower() in HUB_WORDS:
        return Hub(text.lower())
    if text == "source":
        return SourceStage()
    return File(Path(text).expanduser())
