"""The domain registry: what a domain config says (:class:`DomainSpec`), what a loader returns (:class:`Domain`),
and the loaders registered by name.

``register_domain`` records a loader together with how to know ``num_classes`` and ``in_chans`` *without*
loading, because the CLI links both into the model before ``setup`` runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Union

import torch

from .common import Registry


@dataclass
class DomainSpec:
    """One domain of a pair: which dataset, where it lives, and how to turn it into a shifted domain."""

    name: str = "digits"
    root: str = "~/.cache/lit_transfer/data"
    download: bool = True
    shifts: list[dict] = field(default_factory=list)  # applied in order, e.g. [{name: rotate, degrees: 90}]
    # original → new label; unmapped classes are dropped. image_folder also takes names: folder name → class
    # name (renames, e.g. {zero: "0"}; folders not named keep their own name), matched by name across domains
    label_map: dict[str, str] | dict[int, int] | None = None  # names first: {zero: "0"} stays strings
    channels: int | None = None  # force 1 (grayscale) or 3 (RGB)
    image_size: int | None = None  # square resize at load; None keeps the native size
    # image_folder: skip unreadable image files (listed in a warning, counted in result.json) instead of failing
    skip_corrupt: bool = False
    # cifar10/cifar100/svhn/stl10: torchvision md5-checks the dataset files on each load. false only requires
    # them to exist: for a copy whose bytes differ from the official release (re-packed, or a test fixture).
    # Where the data lives or how it is checked is not part of its identity (split_hash).
    check_md5: bool = True
    # 0 or 1: keep one of two disjoint, stratified halves of the dataset (seeded by the split seed), so a source
    # and a target built from the same images (digits -> digits_m) never share one; None keeps all.
    half: int | None = None

    def identity(self) -> dict:
        """What determines the data (not where it is stored): hashed into ``split_hash``."""
        if self.label_map is None:
            label_map = None
        elif renames(self):
            label_map = sorted((str(k), str(v)) for k, v in self.label_map.items())
        else:
            label_map = sorted((int(k), int(v)) for k, v in self.label_map.items())
        ident = {"name": self.name, "shifts": [dict(s) for s in self.shifts], "label_map": label_map,
                 "channels": self.channels, "image_size": self.image_size}
        if self.half is not None:  # only when set, so the hashes of existing configs stay as they were
            ident["half"] = self.half
        return ident


def renames(spec: DomainSpec) -> bool:
    """Whether ``label_map`` renames classes by name (``{zero: "0"}``) rather than mapping label indices."""
    return bool(spec.label_map) and any(isinstance(k, str) and not k.lstrip("-").isdigit() or
                                        isinstance(v, str) and not v.lstrip("-").isdigit()
                                        for k, v in spec.label_map.items())


def data_root(spec: DomainSpec) -> str:
    """The folder the domain's files live in, ``~`` expanded."""
    return os.path.expanduser(spec.root)


@dataclass
class Domain:
    """A decoded dataset in memory."""

    images: torch.Tensor  # uint8 [N, C, H, W]
    labels: torch.Tensor  # int64 [N], original labels (label_map is applied by the splits)
    official: dict[str, torch.Tensor] = field(default_factory=dict)  # e.g. {"train": idx, "test": idx}
    skipped: list[str] = field(default_factory=list)  # unreadable files left out (``skip_corrupt: true``)
    origin: torch.Tensor | None = None  # with ``half``: each image's index in the whole dataset
    converted: int = 0  # image files converted to the domain's channels (grayscale <-> RGB)


IntOrFn = Union[int, Callable[[DomainSpec], int]]


@dataclass
class Entry:
    """A registered domain: its loader and how to know its classes and channels without loading."""

    load: Callable[[DomainSpec], Domain]
    num_classes: IntOrFn
    in_chans: IntOrFn
    cache: bool = False  # a fixed, released dataset: its decoded+resized tensors may be kept on disk


DOMAINS = Registry("domain")


def register_domain(name: str, *, num_classes: IntOrFn, in_chans: IntOrFn, cache: bool = False) -> Callable:
    """Register ``load(spec) -> Domain``; ``num_classes``/``in_chans`` are ints or cheap ``fn(spec)``.

    ``cache``: the dataset is fixed (a released dataset, or one generated with fixed seeds; not a user's folder),
    so :func:`~lit_transfer.data.domains.load_domain` keeps its prepared tensors in
    :data:`~lit_transfer.data.cache.DOMAIN_CACHE` and later runs (every sweep trial) read them back instead of
    decoding, resizing and shifting again."""

    def deco(fn: Callable[[DomainSpec], Domain]) -> Callable:
        DOMAINS[name] = Entry(fn, num_classes, in_chans, cache)
        return fn

    return deco


def list_domains() -> list[str]:
    return sorted(DOMAINS)
