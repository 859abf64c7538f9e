"""Prepared domains kept on disk: fixed datasets (``register_domain(cache=True)``) are decoded, resized and
shifted once, and every later run (each sweep trial) reads them back from :data:`DOMAIN_CACHE`
(``$LIT_TRANSFER_DATA_CACHE``). Files are written atomically and checked on every read (their key and a sha256
of their tensors); a file that fails either is rebuilt, never trusted."""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from .prepare import prepare
from .registry import Domain, DomainSpec, data_root
from lit_transfer import atomic

DOMAIN_CACHE = Path(os.environ.get("LIT_TRANSFER_DATA_CACHE", "~/.cache/lit_transfer/domains")).expanduser()
# Bump when how a domain is prepared changes in a way the source files below do not show (a library's data).
_CACHE_VERSION = 2
# The code that prepares a cached domain: any change to these files is a new cache key (their bytes are hashed).
_PREPARING_CODE = ("registry.py", "prepare.py", "released.py", "shifts.py", "common.py", "packaged.py")


@functools.lru_cache(maxsize=1)
def _code_digest() -> str:
    digest = hashlib.sha256()
    for name in _PREPARING_CODE:
        try:
            digest.update((Path(__file__).parent / name).read_bytes())
        except OSError:  # installed without its sources (bytecode only): _CACHE_VERSION alone keys the code
            digest.update(f"{name}: no source".encode())
    return digest.hexdigest()[:16]


def cache_key(spec: DomainSpec, split_seed: int) -> str:
    """Everything that defines a prepared domain: what it is (name, shifts, channels, size, half, label map),
    where its files are, the split seed (random shifts, halves), and the code version preparing it."""
    return json.dumps({"v": _CACHE_VERSION, "code": _code_digest(), "spec": spec.identity(), "root": data_root(spec),
                       "split_seed": split_seed}, sort_keys=True, default=str)


def _cache_path(spec: DomainSpec, split_seed: int) -> Path:
    return DOMAIN_CACHE / f"{spec.name}-{hashlib.sha256(cache_key(spec, split_seed).encode()).hexdigest()[:16]}.pt"


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


def read_cached(path: Path, key: str) -> Domain | None:
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


def cached_domain(spec: DomainSpec, split_seed: int) -> Domain:
    """The prepared domain read back from the cache, or prepared and written there (when the folder is
    writable)."""
    key, path = cache_key(spec, split_seed), _cache_path(spec, split_seed)
    cached = read_cached(path, key)
    if cached is not None:
        return cached
    domain = prepare(spec, split_seed)
    official = dict(domain.official)
    try:
        with atomic.atomic_path(path) as tmp:
            torch.save({"key": key, "images": domain.images, "labels": domain.labels, "official": official,
                        "origin": domain.origin,
                        "digest": _content_digest(domain.images, domain.labels, official, domain.origin)}, tmp)
    except OSError:
        pass  # a read-only home: every run prepares the data itself
    return domain
