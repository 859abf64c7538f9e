"""Image folders: the ``image_folder`` domain (class folders, optionally under ``train``/``val``/``test``) and
the folder of images ``predict`` reads. Importing this module registers ``image_folder``."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from .registry import Domain, DomainSpec, data_root, register_domain
from lit_transfer.errors import TransferConfigError

_IMAGE_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
_SPLITS = ("train", "val", "test")
_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
_MAX_LISTED = 20  # unreadable files named in one error line
_scan_cache: dict[str, tuple[tuple, dict[str, int]]] = {}


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_EXT and not p.name.startswith("."))


def _class_dirs(folder: Path) -> list[Path]:
    """Class folders: every sub-folder except hidden ones (``.ipynb_checkpoints``, ``.git``)."""
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def _folder_layout(spec: DomainSpec) -> tuple[dict[str, Path], list[str]]:
    """Split folders (``train`` required, ``val``/``test`` optional) or ``{"all": root}``; and class names.

    Every class folder counts, in every split: an empty one, or one a split lacks, is a one-line error (dropping
    it would shift every later class index, or test on fewer classes than were trained)."""
    root = Path(data_root(spec))
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


def folder_modes(spec: DomainSpec) -> dict[str, int]:
    """How many of the domain's image files are grayscale (``"gray"``) and colour (``"rgb"``): every file's
    header is read (not only the first file's), cached per set of files (path, size, mtime)."""
    from PIL import Image

    splits, classes = _folder_layout(spec)
    files = [p for folder in splits.values() for name in classes if (folder / name).is_dir()
             for p in _images_in(folder / name)]
    key = tuple((str(p), st.st_size, st.st_mtime_ns) for p in files for st in [p.stat()])
    cached = _scan_cache.get(str(Path(data_root(spec))))
    if cached is not None and cached[0] == key:
        return dict(cached[1])
    counts = {"gray": 0, "rgb": 0}
    for path in files:
        try:
            with Image.open(path) as img:  # reads the header only
                counts["gray" if img.mode in _GRAY_MODES else "rgb"] += 1
        except Exception:  # noqa: BLE001 - an unreadable file: loading lists it (or skips it)
            continue
    _scan_cache[str(Path(data_root(spec)))] = (key, dict(counts))
    return counts


def folder_in_chans(spec: DomainSpec) -> int:
    """1 when most image files are grayscale, else 3 (a tie is 3: colour kept); ``channels`` overrides it.
    Files of the other kind are converted at load and counted (``Domain.converted``, ``result.json``)."""
    if spec.channels is not None:
        return spec.channels
    counts = folder_modes(spec)
    return 1 if counts["gray"] > counts["rgb"] else 3


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


@register_domain("image_folder", num_classes=lambda spec: len(_folder_layout(spec)[1]), in_chans=folder_in_chans)
def _image_folder(spec: DomainSpec) -> Domain:
    from PIL import Image

    splits, classes = _folder_layout(spec)
    mode = "L" if folder_in_chans(spec) == 1 else "RGB"
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

