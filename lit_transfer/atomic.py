"""The one way lit_transfer writes a file: into a temporary file beside it, then renamed into place.

Readers (a report, a concurrent sweep trial, a resumed run) see the old file or the new one, never half of
one; a failure removes the temporary file and leaves what was there untouched.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

__all__ = ["atomic_path", "write_text", "write_json"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, fsync: bool = False) -> Iterator[Path]:
    """Yields a fresh temporary path beside ``path`` (same suffix); renames it over ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        if fsync:  # a killed machine leaves the old file or the new one, never half of one
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str, fsync: bool = False) -> Path:
    with atomic_path(path, fsync=fsync) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | os.PathLike, payload: Any) -> Path:
    return write_text(path, json.dumps(payload, indent=2, default=str) + "\n", fsync=True)
