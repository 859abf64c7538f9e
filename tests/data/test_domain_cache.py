"""Prepared domains cached on disk ($LIT_TRANSFER_DATA_CACHE): equal to a fresh build, keyed by everything that
defines them, and a damaged file is rebuilt, never trusted."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from lit_transfer.data import cache as domain_cache, registry
from lit_transfer.data.domains import DomainSpec, load_domain
from lit_transfer.data.prepare import prepare

SPECS = [
    DomainSpec(name="digits", shifts=[{"name": "rotate", "degrees": 90}, {"name": "invert"}]),
    DomainSpec(name="uci_digits"),
    DomainSpec(name="digits", half=0, channels=3, image_size=12),
    DomainSpec(name="digits_m", half=1, image_size=12),
]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setattr(domain_cache, "DOMAIN_CACHE", tmp_path / "cache")
    return tmp_path / "cache"


def same(a, b) -> bool:
    return (torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
            and a.official.keys() == b.official.keys() and all(torch.equal(a.official[k], b.official[k]) for k in a.official)
            and (a.origin is None) == (b.origin is None) and (a.origin is None or torch.equal(a.origin, b.origin)))


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.name}-{s.half}")
def test_cached_domain_equals_a_fresh_build_and_is_not_built_again(spec, cache, monkeypatch):
    fresh = prepare(spec, 3)
    first = load_domain(spec, 3)
    assert len(list(cache.glob(f"{spec.name}-*.pt"))) == 1
    monkeypatch.setattr(registry.DOMAINS[spec.name], "load", lambda s: pytest.fail("built again"))
    again = load_domain(spec, 3)
    assert same(fresh, first) and same(fresh, again)
    assert again.images.dtype == torch.uint8 and again.images.is_contiguous()


def test_every_defining_setting_is_its_own_cache_file(cache):
    base = DomainSpec(name="digits", shifts=[{"name": "rotate", "degrees": 30}])
    load_domain(base, 0)
    load_domain(base, 1)  # split seed: random shifts and halves follow it
    load_domain(DomainSpec(name="digits", shifts=[{"name": "rotate", "degrees": 60}]), 0)
    load_domain(DomainSpec(name="digits", shifts=[{"name": "rotate", "degrees": 30}], half=0), 0)
    load_domain(DomainSpec(name="uci_digits", shifts=[{"name": "rotate", "degrees": 30}]), 0)
    assert len(list(cache.glob("*.pt"))) == 5
    assert not list(cache.glob(".*tmp*"))  # written through a temporary file, renamed into place


def _damage_tensor(path):
    saved = torch.load(path, weights_only=True)
    saved["images"] = saved["images"].clone()
    saved["images"].view(-1)[123] ^= 0x10  # one bit in the data; torch.load would read it without complaint
    torch.save(saved, path)


@pytest.mark.parametrize("damage", [
    lambda p: p.write_bytes(b"not a torch file"),
    lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),  # truncated
    lambda p: p.write_bytes(b""),
    _damage_tensor,
], ids=["garbage", "truncated", "empty", "flipped-bit"])
def test_a_damaged_cache_file_is_rebuilt_never_trusted(damage, cache):
    spec = SPECS[0]
    fresh = prepare(spec, 0)
    load_domain(spec, 0)
    (path,) = cache.glob("digits-*.pt")
    damage(path)
    assert same(load_domain(spec, 0), fresh)
    assert same(domain_cache.read_cached(path, domain_cache.cache_key(spec, 0)), fresh)  # and written again, intact


def test_a_file_of_another_key_is_not_used(cache):
    spec = SPECS[1]
    load_domain(spec, 0)
    (path,) = cache.glob("uci_digits-*.pt")
    assert domain_cache.read_cached(path, domain_cache.cache_key(spec, 0)) is not None
    assert domain_cache.read_cached(path, domain_cache.cache_key(spec, 1)) is None  # e.g. a hash-prefix collision


def test_the_cache_folder_comes_from_the_environment(tmp_path):
    env = {**os.environ, "LIT_TRANSFER_DATA_CACHE": str(tmp_path / "elsewhere")}
    out = subprocess.run([sys.executable, "-c", "from lit_transfer.data import cache; print(cache.DOMAIN_CACHE)"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == str(tmp_path / "elsewhere"), out.stderr[-2000:]
