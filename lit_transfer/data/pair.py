"""The domain pair of :class:`~lit_transfer.data.datamodule.DomainPairDataModule`: its specs checked from the
config, the checks across its two domains, the classes matched by name, and which domains a model can be
evaluated on."""

from __future__ import annotations

import hashlib
import json
from typing import Literal

import torch

from . import domains
from .registry import DomainSpec
from lit_transfer.errors import TransferConfigError

Role = Literal["source", "target"]
ROLES: tuple[Role, Role] = ("source", "target")
# "source+target": joint training on labelled source and labelled target batches (multi-task).
TrainOn = Literal["source", "target", "source+target"]
TRAIN_ON = ("source", "target", "source+target")
SPLITS = ("train", "val", "test")
# ``source: none``: no source domain; the knowledge comes from pretrained weights (ImageNet -> target).
NO_SOURCE = "none"


def _as_spec(spec: DomainSpec | dict | None) -> DomainSpec:
    if spec is None:
        return DomainSpec()
    return DomainSpec(**spec) if isinstance(spec, dict) else spec


def pair_specs(source, target, train_on: str, test_per_class) -> dict[str, DomainSpec]:
    """``{role: spec}`` of the configured pair (the target alone with ``source: none``), each checked, with
    ``train_on`` and ``test_per_class`` (a positive integer or null); every error is one line."""
    if train_on not in TRAIN_ON:
        raise TransferConfigError(f"train_on must be 'source', 'target' or 'source+target', got {train_on!r}.")
    if source == NO_SOURCE and train_on != "target":
        raise TransferConfigError(f"data.source is 'none' (no source domain), so train_on must be 'target', "
                                  f"got {train_on!r}; name a source domain to train on it")
    if test_per_class is not None and (isinstance(test_per_class, bool) or not isinstance(test_per_class, int)
                                       or test_per_class < 1):
        raise TransferConfigError(f"data.test_per_class must be a positive integer or null, got {test_per_class!r}")
    specs = {"target": _as_spec(target)} if source == NO_SOURCE else {
        "source": _as_spec(source), "target": _as_spec(target)}
    for spec in specs.values():
        domains.check_spec(spec)
        values = set((spec.label_map or {}).values())
        if values and not domains.renames(spec) and values != set(range(len(values))):
            raise TransferConfigError(f"label_map values must be 0..k-1 without gaps, got {sorted(values)}.")
    for role, spec in specs.items():  # a one-class "classifier" trains and scores nothing
        if domains.num_classes(spec) < 2:
            raise TransferConfigError(f"data.{role} ({spec.name}) has {domains.num_classes(spec)} class; a "
                                      "classifier needs at least 2 (check label_map or the class folders)")
    return specs


def primary_role(train_on: str) -> Role:
    """The domain the model's head predicts: ``train_on``, or the target when training on both."""
    return "target" if train_on == "source+target" else train_on


def match_classes(specs: dict[str, DomainSpec]) -> tuple[list[str] | None, dict[str, dict[int, int]]]:
    """``(shared class names, {role: folder label -> shared label})`` when both domains name their classes
    (image folders): the source's classes, then the target's the source lacks, matched by name (after
    ``label_map`` renames); ``(None, {})`` for datasets whose labels are indices. No shared name: one line."""
    names = {role: domains.class_names(spec) for role, spec in specs.items()}
    if any(v is None for v in names.values()) or "source" not in names:
        return None, {}
    source, target = names["source"], names["target"]
    if not set(source) & set(target):
        raise TransferConfigError(
            f"data.source classes {source} and data.target classes {target} share no name, so no class can "
            "be matched; rename folders, or map them with data.target.label_map (folder name -> source class "
            f"name, e.g. {{{target[0]}: '{source[0]}'}})")
    shared = list(source) + [n for n in target if n not in source]
    maps = {}
    for role, spec in specs.items():
        renamed = [str((spec.label_map or {}).get(c, c)) for c in domains.folder_class_names(spec)]
        maps[role] = {i: shared.index(n) for i, n in enumerate(renamed)}
    return shared, maps


def check_channels(specs: dict[str, DomainSpec]) -> None:
    """Image folders of a pair must resolve to the same channels: a model has one input stem, and a domain
    with other channels would silently drop out of evaluation."""
    if "source" not in specs or not any(spec.name == "image_folder" for spec in specs.values()):
        return
    chans = {role: domains.in_chans(spec) for role, spec in specs.items()}
    if chans["source"] != chans["target"]:
        kind = {1: "grayscale (1 channel)", 3: "RGB (3 channels)"}
        raise TransferConfigError(
            f"data.source images are {kind[chans['source']]} and data.target images are {kind[chans['target']]}; "
            "a model takes one kind: set the same channels on both (data.source.channels=3 and "
            "data.target.channels=3, or 1 for grayscale)")


def check_sizes(specs: dict[str, DomainSpec], sizes: dict[str, tuple]) -> None:
    """Source and target images of one size, unless an ``image_size`` decided them (set on either domain)."""
    if len(sizes) < 2 or sizes["source"] == sizes["target"] or any(s.image_size is not None for s in specs.values()):
        return
    big = max(max(s) for s in sizes.values())
    (sh, sw), (th, tw) = sizes["source"], sizes["target"]
    raise TransferConfigError(
        f"data.source images are {sh}x{sw} and data.target images are {th}x{tw}; set image_size on both "
        f"(e.g. data.source.image_size={big} and data.target.image_size={big}) so the model sees one size")


def pair_split_hash(dm, names: list[str] | None, maps: dict[str, dict[int, int]]) -> str:
    """:meth:`DomainPairDataModule.split_hash`: the domains' identities, the class matching when it renumbers
    classes, and every split index."""
    h = hashlib.sha256()
    ident = {r: dm.specs[r].identity() for r in ROLES if r in dm.specs}
    if dm.test_per_class is not None:  # only when set, so the hashes of existing configs stay as they were
        ident["test_per_class"] = dm.test_per_class
    h.update(json.dumps(ident, sort_keys=True).encode())
    if names is not None and any(m != {i: i for i in m} for m in maps.values()):
        # classes matched by name to other labels than their folders' positions (only then: the hashes of
        # pairs with the same class folders stay as they were)
        h.update(json.dumps({"classes": names, "maps": {r: sorted(m.items()) for r, m in maps.items()}}).encode())
    for role, splits in dm.split_indices().items():
        for split in SPLITS:
            h.update(f"{role}/{split}:".encode())
            h.update(splits[split].to(torch.int64).numpy().tobytes())
    return h.hexdigest()


class ClassMatching:
    """The pair's classes for :class:`DomainPairDataModule`: matched by name across the domains
    (``match_classes``), the ones a domain lacks, and the domains a model can therefore be evaluated on."""

    specs: dict[str, DomainSpec]
    train_on: str
    _classes: tuple | None = None

    @property
    def class_names(self) -> list[str] | None:
        """The pair's class names in label order, when both domains name their classes (image folders): the
        source's classes, then the target's that the source lacks. Classes are matched by name, never by
        position; ``None`` for datasets whose labels are indices."""
        return self._match_classes()[0]

    @property
    def missing_classes(self) -> dict[str, list[str]]:
        """``{role: [class names]}`` of the shared classes a domain has no images of (it is evaluated on the
        classes it has)."""
        names, maps = self._match_classes()
        if names is None:
            return {}
        out = {}
        for role, lut in maps.items():
            missing = [n for i, n in enumerate(names) if i not in set(lut.values())]
            if missing:
                out[role] = missing
        return out

    @property
    def val_domains(self) -> list[str]:
        """The trained domain, then the other one when a model with one head and one stem can be evaluated on it:
        the same classes and channels (joint training has a head per domain: the same channels suffice)."""
        primary = primary_role(self.train_on)
        other = "source" if primary == "target" else "target"
        if other not in self.specs:
            return [primary]
        a, b = self.specs[primary], self.specs[other]
        if self.train_on == "source+target" and domains.in_chans(a) == domains.in_chans(b):
            return [primary, other]
        same = (self._num_classes(primary) == self._num_classes(other)
                and domains.in_chans(a) == domains.in_chans(b))
        return [primary, other] if same else [primary]

    def _match_classes(self) -> tuple[list[str] | None, dict[str, dict[int, int]]]:
        if self._classes is None:
            self._classes = match_classes(self.specs)
        return self._classes

    def _num_classes(self, role: str) -> int:
        names = self.class_names
        return len(names) if names is not None else domains.num_classes(self.specs[role])

    def _label_map(self, role: str) -> dict[int, int] | None:
        names, maps = self._match_classes()
        return maps[role] if names is not None else self.specs[role].label_map
