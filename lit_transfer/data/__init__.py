"""Data layer: domains and shifts registries, deterministic splits, in-memory loaders, the domain-pair module."""

from .datamodule import DomainPairDataModule
from .domains import DomainSpec, list_domains, register_domain
from .loader import InMemoryLoader
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
