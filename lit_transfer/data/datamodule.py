"""``DomainPairDataModule``: a source and a target domain with fixed splits, served from memory."""

from __future__ import annotations

import functools
import sys
import time
from typing import Literal

import lightning as L
import torch
from lightning.pytorch.utilities import CombinedLoader

from . import domains
from .augment import augment_streams, check_augment
from .domains import DomainSpec, load_domain
from .folders import read_image_files
from .loader import InMemoryLoader
from .pair import ClassMatching, Role, TrainOn, check_channels, check_sizes, pair_specs, pair_split_hash, primary_role
from .splits import draw_splits, map_labels
from .streams import rank_and_world_size, training_loader, transfer_options
from lit_transfer.errors import TransferConfigError
from lit_transfer.validation import check_data_args


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
        self.specs = pair_specs(source, target, train_on, test_per_class)
        check_augment(augment)
        check_data_args(target_shots=target_shots, source_shots=source_shots, val_shots=val_shots,
                        split_seed=split_seed or 0, shots_seed=shots_seed, val_fraction=val_fraction,
                        test_fraction=test_fraction, batch_size=batch_size, eval_batch_size=eval_batch_size,
                        specs=self.specs)
        self.train_on, self.unlabeled_target, self.test_per_class = train_on, unlabeled_target, test_per_class
        self.shots = {"source": source_shots, "target": target_shots}
        self.val_shots = val_shots
        self.shots_seed = (split_seed or 0) if shots_seed is None else shots_seed
        self.split_seed, self.val_fraction, self.test_fraction = split_seed or 0, val_fraction, test_fraction
        self.batch_size, self.eval_batch_size, self.augment = batch_size, eval_batch_size, augment
        self.prefetch = bool(prefetch)
        self.seed = 0  # the training seed, captured in setup
        self._classes: tuple | None = None  # (shared class names, {role: label map}), read on first use
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
        return primary_role(self.train_on)

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
            if domain.skipped:
                self.skipped_files[role] = list(domain.skipped)
            if domain.converted:
                self.converted[role] = domain.converted
            labels = map_labels(domain.labels, self._label_map(role))
            whole_train, splits = draw_splits(
                domain.labels, domain.official, labels, role, self._num_classes(role), split_seed=self.split_seed,
                val_fraction=self.val_fraction, test_fraction=self.test_fraction, shots=self.shots[role],
                shots_seed=self.shots_seed, val_shots=self.val_shots, test_per_class=self.test_per_class,
                absent={self.class_names.index(n) for n in missing.get(role, [])})
            if role == "target":  # the whole train split, before shots: the unlabeled-target stream's images
                self._subsets["target", "unlabeled"] = domain.images[whole_train], labels[whole_train]
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

    def transfer_options(self) -> dict:
        """How the loaders hand batches to the training device: pinned memory on CUDA; prefetched there if asked."""
        return transfer_options(self.trainer, self.prefetch)

    def train_dataloader(self) -> InMemoryLoader | CombinedLoader:
        streams = {name: self.subset("target", "unlabeled") if name == "unlabeled" else self.subset(name, "train")
                   for name in self.train_streams}
        return training_loader(streams, self.batch_size, self.seed, *rank_and_world_size(self.trainer),
                               **self.transfer_options())

    def _eval_loaders(self, split: str, roles: list[str]) -> list[InMemoryLoader]:
        rank, world_size = rank_and_world_size(self.trainer)
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
        files, images = read_image_files(self.predict_dir, domains.in_chans(spec), size)
        self.predict_files = files
        rank, world_size = rank_and_world_size(self.trainer)
        placeholder = torch.full((len(images),), -1, dtype=torch.int64)
        return InMemoryLoader(images, placeholder, self.eval_batch_size, shuffle=False, rank=rank,
                              world_size=world_size)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        trainer = self.trainer
        if not self.augment or trainer is None or not trainer.training:
            return batch
        return augment_streams(batch, self.augment, self.seed, trainer.global_step, trainer.global_rank)
