"""Data layer: domains and shifts registries, deterministic splits, in-memory loaders, the domain-pair module."""

from .datamodule import DomainPairDataModule
from .loader import InMemoryLoader
from .registry import DomainSpec, list_domains, register_domain
from .shifts import list_shifts, register_shift

__all__ = [
    "DomainPairDataModule",
    "DomainSpec",
    "InMemoryLoader",
    "list_domains",
    "list_shifts",
    "register_domain",
    "register_shift",
]
