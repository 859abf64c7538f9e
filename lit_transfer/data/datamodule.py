"""``DomainPairDataModule``: a source and a target domain with fixed splits, served from memory."""

from __future__ import annotations

import functools
import hashlib
import json
import sys
import time
from typing import Literal

import lightning as L
import torch
from lightning.pytorch.utilities import CombinedLoader

from . import domains
from .augment import augment_batch, check_augment
from .common import derive_seed
from .domains import DomainSpec, load_domain
from .loader import InMemoryLoader
from .splits import map_labels, split_domain, take_shots
from lit_transfer.errors import TransferConfigError
from lit_transfer.validation import check_data_args

Role = Literal["source", "target"]
_ROLES: tuple[Role, Role] = ("source", "target")
# "source+target": joint training on labelled source and labelled target batches (multi-task).
TrainOn = Literal["source", "target", "source+target"]
_TRAIN_ON = ("source", "target", "source+target")
_SPLITS = ("train", "val", "test")


def _as_spec(spec: DomainSpec | dict | None) -> DomainSpec:
    if spec is None:
        return DomainSpec()
    return DomainSpec(**spec) if isinstance(spec, dict) else spec


# ``source: none``: no source domain; the knowledge comes from pretrained weights (ImageNet -> target).
NO_SOURCE = "none"


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
    ident = {r: dm.specs[r].identity() for r in _ROLES if r in dm.specs}
    if dm.test_per_class is not None:  # only when set, so the hashes of existing configs stay as they were
        ident["test_per_class"] = dm.test_per_class
    h.update(json.dumps(ident, sort_keys=True).encode())
    if names is not None and any(m != {i: i for i in m} for m in maps.values()):
        # classes matched by name to other labels than their folders' positions (only then: the hashes of
        # pairs with the same class folders stay as they were)
        h.update(json.dumps({"classes": names, "maps": {r: sorted(m.items()) for r, m in maps.items()}}).encode())
    for role, splits in dm.split_indices().items():
        for split in _SPLITS:
            h.update(f"{role}/{split}:".encode())
            h.update(splits[split].to(torch.int64).numpy().tobytes())
    return h.hexdigest()


def check_pair_args(source, train_on: str, test_per_class) -> None:
    """``source: none`` trains on the target only; ``test_per_class`` is a positive integer or null."""
    if source == NO_SOURCE and train_on != "target":
        raise TransferConfigError(f"data.source is 'none' (no source domain), so train_on must be 'target', "
                                  f"got {train_on!r}; name a source domain to train on it")
    if test_per_class is not None and (isinstance(test_per_class, bool) or not isinstance(test_per_class, int)
                                       or test_per_class < 1):
        raise TransferConfigError(f"data.test_per_class must be a positive integer or null, got {test_per_class!r}")


class ClassMatching:
    """Class names matched across the pair (``match_classes``), for :class:`DomainPairDataModule`."""

    specs: dict[str, DomainSpec]
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


def _once_timed(build):
    """``_load``: builds the data once (later calls return at once) and records the wall and CPU seconds it took
    as ``load_time`` (in result.json ``data_time_s``: a sweep trial's fixed cost, not its fit)."""

    @functools.wraps(build)
    def load(self) -> None:
        if self._indices:
            return
        started = time.perf_counter(), time.process_time()
        build(self)
        self.load_time = (time.perf_counter() - started[0], time.process_time() - started[1])

    return load


class DomainPairDataModule(ClassMatching, L.LightningDataModule):
    """Source and target domains, each split into train/val/test once, deterministically from ``split_seed``.

    ``train_on`` picks the domain a run trains on, so one data config serves the source stage and every
    target strategy. Val and test dataloaders come in the order of ``val_domains``/``test_domains``: the
    trained domain first, then the other one when it shares the label space and channels.

    Args:
        source, target: the two domains.
        train_on: which domain's train split ``train_dataloader`` serves.
        target_shots, source_shots: labelled training examples per class (``None``: all). For a fixed
            ``shots_seed`` smaller sets are subsets of larger ones.
        val_shots: labelled target *validation* examples per class, what checkpoint and hyper-parameter
            selection may see. ``"auto"`` (default): as many as ``target_shots`` (all when that is ``None``),
            fewer where a class's val split is smaller; an integer: exactly that many (an error if a class has
            fewer); ``None``: the whole target val split. A few-shot run that selects on hundreds of labelled
            val images has used more labels than it trained on; ``result.json`` counts both.
        split_seed: seeds the train/val/test partition, the halves and random shift parameters: fixed across runs,
            so every run is tested on the same images and no source-stage image has its twin in a target test
            split. ``None``: 0, and the CLI sets it to the run's seed (each seed its own split and halves).
        shots_seed: which labelled examples are drawn (train shots and val shots); ``None``: ``split_seed``.
            The CLI sets it to the run's seed, so seeds cover the variance of the drawn examples while runs
            of different strategies with the same seed stay paired (same ``split_hash``).
        val_fraction, test_fraction: stratified fractions carved out where a dataset has no official split
            (``test_fraction`` is unused when it has an official test set).
        batch_size, eval_batch_size: training and evaluation batch sizes.
        augment: train-time augmentation, e.g. ``{hflip: true, crop_padding: 2}``; off by default.
        test_per_class: at most this many test images per class (a fixed, seeded subset: the same for every run
            and seed), so evaluating on a large official test set stays cheap; ``None``: the whole test split.
        prefetch: the loaders copy the next batch to the training device while the current one trains (on
            CUDA on a side stream). Batches are uint8 either way, gathered into pinned memory whenever the
            device is a CUDA GPU, and normalised by the model on the device.
        unlabeled_target: add an unlabeled-target stream: the *whole* target train split (not only the
            labelled shots), images only. With more than one stream (``train_on: source+target`` or
            ``unlabeled_target``) training batches are dicts ``{"source": (x, y), "target": (x, y),
            "unlabeled": x}`` holding only the configured streams (a ``CombinedLoader``, ``max_size_cycle``);
            a single stream stays an ``(x, y)`` tuple.
        predict_dir: a folder of images (any layout: flat, or class folders; read recursively) that
            ``predict`` serves instead of the target test split, converted to the model's channels and size;
            ``predict_files`` lists them in order (``lit-transfer predict`` writes ``predictions.csv``).
    """

    def __init__(
        self,
        source: DomainSpec | Literal["none"] | None = None,
        target: DomainSpec | None = None,
        train_on: TrainOn = "target",
        target_shots: int | None = None,
        source_shots: int | None = None,
        val_shots: int | Literal["auto"] | None = "auto",
        split_seed: int | None = 0,
        shots_seed: int | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        batch_size: int = 64,
        eval_batch_size: int = 512,
        augment: dict | None = None,
        unlabeled_target: bool = False,
        test_per_class: int | None = None,
        predict_dir: str | None = None,
        prefetch: bool = False,
    ) -> None:
        super().__init__()
        if train_on not in _TRAIN_ON:
            raise TransferConfigError(f"train_on must be 'source', 'target' or 'source+target', got {train_on!r}.")
        check_pair_args(source, train_on, test_per_class)
        self.specs = {"target": _as_spec(target)} if source == NO_SOURCE else {
            "source": _as_spec(source), "target": _as_spec(target)}
        self.test_per_class = test_per_class
        for spec in self.specs.values():
            domains.check_spec(spec)
            values = set((spec.label_map or {}).values())
            if values and not domains.renames(spec) and values != set(range(len(values))):
                raise TransferConfigError(f"label_map values must be 0..k-1 without gaps, got {sorted(values)}.")
        self._classes: tuple | None = None  # (shared class names, {role: label map}), read on first use
        for role, spec in self.specs.items():  # a one-class "classifier" trains and scores nothing
            if domains.num_classes(spec) < 2:
                raise TransferConfigError(f"data.{role} ({spec.name}) has {domains.num_classes(spec)} class; a "
                                          "classifier needs at least 2 (check label_map or the class folders)")
        check_augment(augment)
        check_data_args(target_shots=target_shots, source_shots=source_shots, val_shots=val_shots,
                        split_seed=split_seed or 0, shots_seed=shots_seed, val_fraction=val_fraction,
                        test_fraction=test_fraction, batch_size=batch_size, eval_batch_size=eval_batch_size,
                        specs=self.specs)
        self.train_on = train_on
        self.unlabeled_target = unlabeled_target
        self.shots = {"source": source_shots, "target": target_shots}
        self.val_shots = val_shots
        self.shots_seed = (split_seed or 0) if shots_seed is None else shots_seed
        self.split_seed, self.val_fraction, self.test_fraction = split_seed or 0, val_fraction, test_fraction
        self.batch_size, self.eval_batch_size, self.augment = batch_size, eval_batch_size, augment
        self.prefetch = bool(prefetch)
        self.seed = 0  # the training seed, captured in setup
        self._indices: dict[str, dict[str, torch.Tensor]] = {}
        self._subsets: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}
        self.skipped_files: dict[str, list[str]] = {}  # unreadable files left out (skip_corrupt: true), per role
        self.converted: dict[str, int] = {}  # image files converted to their domain's channels, per role
        self.predict_dir = predict_dir
        self.predict_files: list[str] = []  # predict_dir's images, relative to it, in prediction order

    # --- known before any data is loaded (the CLI links these into the model) ---

    @property
    def source(self) -> DomainSpec | None:
        """The source domain; ``None`` with ``source: none`` (pretrained weights are the only source)."""
        return self.specs.get("source")

    @property
    def target(self) -> DomainSpec:
        return self.specs["target"]

    @property
    def source_num_classes(self) -> int | None:
        return None if self.source is None else self._num_classes("source")

    @property
    def target_num_classes(self) -> int:
        return self._num_classes("target")

    @property
    def primary(self) -> Role:
        """The domain the model's head predicts: ``train_on``, or the target when training on both."""
        return "target" if self.train_on == "source+target" else self.train_on

    @property
    def num_classes(self) -> int:
        return self._num_classes(self.primary)

    @property
    def in_chans(self) -> int:
        return domains.in_chans(self.specs[self.primary])

    @property
    def other(self) -> Role:
        return "source" if self.primary == "target" else "target"

    @property
    def val_domains(self) -> list[str]:
        # A model with one head and one stem can only be evaluated on a domain with the same classes and channels.
        if self.other not in self.specs:
            return [self.primary]
        a, b = self.specs[self.primary], self.specs[self.other]
        if self.train_on == "source+target" and domains.in_chans(a) == domains.in_chans(b):
            return [self.primary, self.other]  # joint training has a head per domain (the objective's)
        same = (self._num_classes(self.primary) == self._num_classes(self.other)
                and domains.in_chans(a) == domains.in_chans(b))
        return [self.primary, self.other] if same else [self.primary]

    @property
    def train_streams(self) -> list[str]:
        """Names of the training streams, in batch order: ``source``/``target`` (labelled), ``unlabeled``."""
        labelled = ["source", "target"] if self.train_on == "source+target" else [self.train_on]
        return labelled + (["unlabeled"] if self.unlabeled_target else [])

    @property
    def test_domains(self) -> list[str]:
        return self.val_domains

    # --- loading and splitting ---

    def prepare_data(self) -> None:
        self._load()  # downloads on local rank 0; the decoded data is kept for setup in the same process

    def setup(self, stage: str | None = None) -> None:
        self._load()
        if stage in ("fit", None):  # training on nothing would "succeed" at chance accuracy
            for role in self.train_streams:
                images, _ = self.subset("target", "unlabeled") if role == "unlabeled" else self.subset(role, "train")
                if len(images) == 0:
                    raise TransferConfigError(f"data: the {role} train split is empty after sampling "
                                              f"(shots={self.shots.get(role)}); nothing to train on")
        self.seed = torch.initial_seed()  # seed_everything sets it, so the shuffle order follows the run's seed

    @_once_timed
    def _load(self) -> None:
        check_channels(self.specs)
        missing = self.missing_classes
        for role, names in missing.items():
            have = self._num_classes(role) - len(names)
            print(f"[lit_transfer] data.{role} has {have} of the {self._num_classes(role)} classes (no images of "
                  f"{names}): it is evaluated on the classes it has", file=sys.stderr)
        for role, spec in self.specs.items():
            domain = load_domain(spec, self.split_seed)
            if getattr(domain, "skipped", None):
                self.skipped_files[role] = list(domain.skipped)
            if domain.converted:
                self.converted[role] = domain.converted
            labels = map_labels(domain.labels, self._label_map(role))
            splits = split_domain(
                domain.labels, domain.official, self.split_seed, self.val_fraction, self.test_fraction
            )
            splits = {k: v[labels[v] >= 0] for k, v in splits.items()}
            if role == "target":  # the whole train split, before shots: the unlabeled-target stream's images
                self._subsets["target", "unlabeled"] = domain.images[splits["train"]], labels[splits["train"]]
            k = self._num_classes(role)
            absent = {self.class_names.index(n) for n in missing.get(role, [])}
            splits["train"] = take_shots(splits["train"], labels, self.shots[role], k, self.shots_seed, f"{role}_shots",
                                         absent=absent)
            if self.test_per_class is not None:  # seeded by split_seed: every run is tested on the same images
                splits["test"] = take_shots(splits["test"], labels, self.test_per_class, k, self.split_seed,
                                            "test_per_class", at_most=True)
            if role == "target" and self.val_shots is not None:
                auto = self.val_shots == "auto"
                shots = self.shots["target"] if auto else self.val_shots
                splits["val"] = take_shots(splits["val"], labels, shots, k, self.shots_seed, "val_shots",
                                           at_most=auto, absent=absent)
            self._indices[role] = splits
            for split, idx in splits.items():
                self._subsets[role, split] = domain.images[idx], labels[idx]
        check_sizes(self.specs, {role: tuple(self._subsets[role, "train"][0].shape[-2:]) for role in self.specs})

    def split_indices(self) -> dict[str, dict[str, torch.Tensor]]:
        """``{role: {split: indices into the domain's dataset}}``, train after shots; loads the data if needed."""
        self._load()
        return {role: dict(splits) for role, splits in self._indices.items()}

    def labelled_counts(self) -> dict[str, int]:
        """How many labelled target examples this data serves for training and for validation."""
        splits = self.split_indices()["target"]
        trains = self.train_on in ("target", "source+target")
        return {"target_train": len(splits["train"]) if trains else 0, "target_val": len(splits["val"])}

    def split_hash(self) -> str:
        """sha256 of every split index of both domains and what defines the domains: equal data, equal hash."""
        return pair_split_hash(self, *self._match_classes())

    def subset(self, role: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images_uint8, labels)`` of one split of one domain."""
        self._load()
        return self._subsets[role, split]

    # --- dataloaders ---

    def _dist(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def transfer_options(self) -> dict:
        """How the loaders hand batches to the training device: pinned memory on CUDA; prefetched there if asked."""
        trainer = self.trainer
        device = getattr(getattr(trainer, "strategy", None), "root_device", None) if trainer is not None else None
        accelerated = device is not None and device.type != "cpu"
        return {"pin_memory": accelerated and device.type == "cuda",
                "device": device if self.prefetch and accelerated else None}

    def _train_loader(self, images: torch.Tensor, labels: torch.Tensor, seed: int) -> InMemoryLoader:
        rank, world_size = self._dist()
        # Few-shot sets can be smaller than a batch: dropping the last batch would then drop everything.
        drop_last = -(-len(labels) // world_size) >= self.batch_size
        return InMemoryLoader(images, labels, self.batch_size, shuffle=True, drop_last=drop_last,
                              seed=seed, rank=rank, world_size=world_size, **self.transfer_options())

    def train_dataloader(self) -> InMemoryLoader | CombinedLoader:
        streams = self.train_streams
        loaders: dict = {}
        for name in streams:
            # The first stream keeps the run's seed (single-stream order unchanged); others get their own.
            seed = self.seed if name == streams[0] else derive_seed(self.seed, "stream", name)
            if name == "unlabeled":
                images = self.subset("target", "unlabeled")[0]
                # The labels never enter the loader: placeholders, dropped by ImagesOnly.
                placeholder = torch.full((len(images),), -1, dtype=torch.int64)
                loaders[name] = ImagesOnly(self._train_loader(images, placeholder, seed))
            else:
                loaders[name] = self._train_loader(*self.subset(name, "train"), seed)
        if len(loaders) == 1:
            return loaders[streams[0]]
        return CombinedLoader(loaders, mode="max_size_cycle")

    def _eval_loaders(self, split: str, roles: list[str]) -> list[InMemoryLoader]:
        rank, world_size = self._dist()
        return [InMemoryLoader(*self.subset(role, split), self.eval_batch_size, shuffle=False,
                               rank=rank, world_size=world_size, **self.transfer_options()) for role in roles]

    def val_dataloader(self) -> list[InMemoryLoader]:
        return self._eval_loaders("val", self.val_domains)

    def test_dataloader(self) -> list[InMemoryLoader]:
        return self._eval_loaders("test", self.test_domains)

    def predict_dataloader(self) -> InMemoryLoader:
        if self.predict_dir is None:
            return self._eval_loaders("test", ["target"])[0]
        spec = self.specs[self.primary]
        size = spec.image_size or int(self.subset(self.primary, "train")[0].shape[-1])
        files, images = domains.read_image_files(self.predict_dir, domains.in_chans(spec), size)
        self.predict_files = files
        rank, world_size = self._dist()
        placeholder = torch.full((len(images),), -1, dtype=torch.int64)
        return InMemoryLoader(images, placeholder, self.eval_batch_size, shuffle=False, rank=rank,
                              world_size=world_size)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        trainer = self.trainer
        if not self.augment or trainer is None or not trainer.training:
            return batch
        return augment_streams(batch, self.augment, self.seed, trainer.global_step, trainer.global_rank)


def augment_streams(batch, augment: dict, seed: int, step: int, rank: int):
    """A training batch augmented on its device, seeded by (seed, step, rank[, stream]), not by global RNG state:
    a resumed run augments the same way. Multi-stream batches: each stream with its own generator."""
    if isinstance(batch, dict):
        out = {}
        for name, part in batch.items():
            images = part if name == "unlabeled" else part[0]
            gen = torch.Generator(device=images.device)
            gen.manual_seed(derive_seed(seed, step, rank, name))
            images = augment_batch(images, gen, **augment)
            out[name] = images if name == "unlabeled" else (images, part[1])
        return out
    images, labels = batch
    gen = torch.Generator(device=images.device)
    gen.manual_seed(derive_seed(seed, step, rank))
    return augment_batch(images, gen, **augment), labels


class ImagesOnly:
    """An :class:`InMemoryLoader` that yields images only: the unlabeled stream never carries labels."""

    def __init__(self, loader: InMemoryLoader) -> None:
        self.loader = loader
        self.sampler = loader.sampler  # Lightning calls sampler.set_epoch(epoch) on every training loader
        self.batch_sampler = None

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for images, _ in self.loader:
            yield images
