"""Frozen backbones computed once: a content-addressed cache of backbone embeddings.

While the whole backbone is frozen (linear probe, the LP phase of LP-FT, a frozen start of gradual unfreezing)
and nothing random happens before the head (train-time augmentation off, BatchNorm statistics frozen, no
active dropout), every epoch would push the same images through the same function. Instead the train split's
embeddings are computed once and the train ``InMemoryLoader`` serves rows of them, ``[B, D]``, in exactly the
batch order it would have served the images; :meth:`TransferClassifier.embed` passes such rows through. When a
phase unfreezes anything, the loader goes back to images. Validation and test loaders use the cache the same
way while the backbone is frozen (eval mode: always deterministic).

The key is a sha256 of everything the embeddings depend on: the backbone's weights and buffers, the images
(content, shape, dtype — so the split indices, shots, shifts and resizing are all in it), the normalisation
and the model's preprocessing, the numeric context (autocast dtype, channels_last) and the storage dtype.
Change any of them and the key changes: the cache never serves stale features.

Memory is bounded: sets are kept in an LRU dict up to ``feature_cache.memory_mb`` (default 1024 MiB; a config
argument, not an environment variable, so it is in the run's config); a larger set, or any set when a cache
directory (``feature_cache.cache_dir``) is given, is written chunk by chunk to a ``.npy`` file and
served as a memory map (cross-process reuse: sweep trials over the same frozen backbone share it).
``dtype="float16"`` halves the footprint at the cost of exactness (the head then sees rounded features).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import tempfile
import threading
import weakref
from collections import OrderedDict
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn

from lit_transfer.atomic import atomic_path
from lit_transfer.compat import BATCH_NORM, DROPOUT, tensor_version

__all__ = ["FeatureCache", "default_cache", "tensor_digest", "module_digest", "backbone_is_deterministic",
           "is_feature_batch", "FEATURE_DTYPES"]

log = logging.getLogger(__name__)

FEATURE_DTYPES = {"float32": torch.float32, "float16": torch.float16}
_NP = {torch.float32: np.float32, torch.float16: np.float16}
DEFAULT_CACHE_MB = 1024.0
_VERSION = "features-v1"  # bump when what a key covers changes


def is_feature_batch(x) -> bool:
    """``[B, D]`` floating rows (cached embeddings), as opposed to ``[B, C, H, W]`` images."""
    return isinstance(x, torch.Tensor) and x.ndim == 2 and x.is_floating_point()


# ------------------------------------------------------------------------------------------------ digests
def _tensor_buffer(t: torch.Tensor) -> np.ndarray:
    """The tensor's bytes as a flat uint8 array (a view where possible: hashing copies nothing)."""
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.contiguous().reshape(-1)
    if t.dtype != torch.uint8:
        t = t.view(torch.uint8)
    return t.numpy()


_DIGESTS: dict[int, tuple[weakref.ref, tuple, str]] = {}
_DIGESTS_LOCK = threading.Lock()


def tensor_digest(t: torch.Tensor) -> str:
    """sha256 of a tensor's shape, dtype and content; memoised per live tensor until it is modified in place."""
    stamp = (t.data_ptr(), tuple(t.shape), t.stride(), t.dtype, tensor_version(t), t.device.type)
    with _DIGESTS_LOCK:
        hit = _DIGESTS.get(id(t))
    if hit is not None and hit[0]() is t and hit[1] == stamp:
        return hit[2]
    h = hashlib.sha256(f"{tuple(t.shape)}|{t.dtype}|".encode())
    if t.numel():
        h.update(_tensor_buffer(t))
    digest = h.hexdigest()
    with _DIGESTS_LOCK:
        if len(_DIGESTS) > 4096:
            _DIGESTS.clear()
        _DIGESTS[id(t)] = (weakref.ref(t), stamp, digest)
    return digest


def module_digest(module: nn.Module) -> str:
    """sha256 of a module's parameters and buffers (names, shapes, dtypes, values)."""
    h = hashlib.sha256()
    for name, t in list(module.named_parameters()) + list(module.named_buffers()):
        h.update(name.encode())
        h.update(tensor_digest(t).encode())
    return h.hexdigest()


# --------------------------------------------------------------------------------------------- eligibility
def backbone_is_deterministic(backbone: nn.Module) -> bool:
    """Whether the backbone, in its current (training) mode, is a fixed function of its input.

    BatchNorm in train mode uses batch statistics (and updates its running ones), active dropout/drop-path is
    random: with either, per-epoch recomputation is not the same as a cache.
    """
    for m in backbone.modules():
        if not m.training:
            continue
        if isinstance(m, BATCH_NORM):
            return False
        if isinstance(m, DROPOUT) and m.p > 0:
            return False
        if "drop" in type(m).__name__.lower() and float(getattr(m, "drop_prob", getattr(m, "p", 0.0)) or 0.0) > 0:
            return False
    return True


# ------------------------------------------------------------------------------------------------- storage
class FeatureCache:
    """Embeddings by key: an LRU dict bounded in bytes, spilling to ``.npy`` memory maps on disk."""

    def __init__(self, max_memory_mb: float = DEFAULT_CACHE_MB) -> None:
        self.max_memory_bytes = int(max_memory_mb * 2**20)
        self._mem: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._spill_dir: Optional[Path] = None
        self.hits = self.misses = 0

    def set_budget(self, max_memory_mb: float) -> None:
        """Bound the in-memory sets to ``max_memory_mb`` MiB from now on (least recently used evicted first)."""
        self.max_memory_bytes = int(max_memory_mb * 2**20)
        self._evict()

    @property
    def memory_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._mem.values())

    def clear(self) -> None:
        self._mem.clear()
        self.hits = self.misses = 0

    def _spill(self) -> Path:
        if self._spill_dir is None:
            self._spill_dir = Path(tempfile.mkdtemp(prefix="lit_transfer_features_"))
        return self._spill_dir

    def get_or_compute(self, key: str, n: int, dim_fn, compute_chunks, dtype: torch.dtype,
                       cache_dir: Optional[str] = None) -> torch.Tensor:
        """The ``[n, D]`` embeddings for ``key``; ``compute_chunks()`` yields ``(lo, hi, rows)`` on a miss."""
        if key in self._mem:
            self._mem.move_to_end(key)
            self.hits += 1
            return self._mem[key]
        path = Path(cache_dir).expanduser() / f"{key}.npy" if cache_dir else None
        if path is not None and path.is_file():
            self.hits += 1
            return self._load(path)
        self.misses += 1
        dim = dim_fn()
        nbytes = n * dim * torch.empty((), dtype=dtype).element_size()
        if path is None and nbytes > self.max_memory_bytes:
            path = self._spill() / f"{key}.npy"
        if path is None:
            out = torch.empty((n, dim), dtype=dtype)
            for lo, hi, rows in compute_chunks():
                out[lo:hi] = rows.to(dtype)
            self._remember(key, out)
            return out
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:  # a concurrent reader sees a whole file or none
            arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=_NP[dtype], shape=(n, dim))
            for lo, hi, rows in compute_chunks():  # chunk by chunk: the whole set is never in memory
                arr[lo:hi] = rows.to(dtype).numpy()
            arr.flush()
            del arr
        return self._load(path)

    def _remember(self, key: str, t: torch.Tensor) -> None:
        self._mem[key] = t
        self._evict()

    def _evict(self) -> None:
        while len(self._mem) > 1 and self.memory_bytes > self.max_memory_bytes:
            self._mem.popitem(last=False)

    @staticmethod
    def _load(path: Path) -> torch.Tensor:
        arr = np.load(path, mmap_mode="c")  # copy-on-write map: writable for torch, the file stays untouched
        return torch.from_numpy(arr)


_DEFAULT = FeatureCache()


def default_cache() -> FeatureCache:
    return _DEFAULT


# ------------------------------------------------------------------------------------------- computation
def feature_key(model, images: torch.Tensor, dtype: torch.dtype, context: str = "") -> str:
    """Content key of the embeddings of ``images`` under ``model`` (a TransferClassifier)."""
    h = hashlib.sha256(_VERSION.encode())
    h.update(f"|{model.backbone.name}|{type(model).__qualname__}|{dtype}|{context}|".encode())
    h.update(module_digest(model.backbone).encode())
    for name in ("mean", "std"):
        h.update(tensor_digest(getattr(model, name)).encode())
    h.update(tensor_digest(images).encode())
    return h.hexdigest()


def embeddings(model, images: torch.Tensor, dtype: torch.dtype = torch.float32, chunk: int = 512,
               cache: Optional[FeatureCache] = None, cache_dir: Optional[str] = None,
               forward_context=None, context: str = "") -> torch.Tensor:
    """``model.embed`` of every image, in eval mode, from the cache or computed once (then cached).

    ``forward_context``: what the trainer wraps a forward pass in (its precision plugin's autocast), so cached
    features are computed exactly like the ones they replace; ``context`` names it (e.g. the precision) in the key.
    """
    cache = cache or _DEFAULT
    forward_context = forward_context or contextlib.nullcontext
    key = feature_key(model, images, dtype, context)
    device = model.device

    def dim() -> int:
        return int(model.backbone.out_features)

    def chunks():
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad(), forward_context():
                for lo in range(0, len(images), chunk):
                    x = images[lo : lo + chunk].to(device)
                    yield lo, lo + len(x), model.embed(x).float().cpu()
        finally:
            model.train(was_training)

    return cache.get_or_compute(key, len(images), dim, chunks, dtype, cache_dir)
