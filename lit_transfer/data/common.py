"""Registries (name → function, timm-style) and stable seeds shared by domains, shifts and splits."""

from __future__ import annotations

import difflib
import hashlib

import torch
from lit_transfer.errors import TransferConfigError

class Registry(dict):
    """A dict of named entries whose lookup error lists the known names and the closest matches."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def get_or_raise(self, name: str):
        if name in self:
            return self[name]
        close = difflib.get_close_matches(name, self.keys(), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise TransferConfigError(f"Unknown {self.kind} {name!r}.{hint} Known: {', '.join(sorted(self))}.")


def derive_seed(*parts) -> int:
    """A 63-bit seed from any printable parts, stable across processes (unlike ``hash``) and torch versions."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def generator(*parts) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(*parts))
