"""lit_transfer: transfer-learning experiments on Lightning and timm."""

__version__ = "0.1.0"
