"""Figure files shared by the report and the ranking comparison."""

from __future__ import annotations

from pathlib import Path

__all__ = ["slug_of", "save_figure"]


def slug_of(name: str) -> str:
    """A file-name-safe form of an experiment or strategy name."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def save_figure(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
