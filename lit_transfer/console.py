"""What a run prints: lit_transfer's own lines and Lightning's progress bar, nothing else unless asked.

Third-party chatter (Lightning's "GPU available", tips, deprecation and "smaller than the logging interval"
warnings, "configure_callbacks will override", "Restoring states") is off by default; ``--verbose`` brings it
back. lit_transfer's own lines go through :func:`say`, never through Lightning's loggers, so quieting those
never hides ours.
"""

from __future__ import annotations

import logging
import sys
import warnings

__all__ = ["say", "quiet", "THIRD_PARTY"]

THIRD_PARTY = ("lightning", "lightning_fabric", "pytorch_lightning", "torch", "torchmetrics", "torchvision", "timm",
               "jsonargparse", "sklearn")
_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "lightning_fabric", "pytorch_lightning")


def say(message: str) -> None:
    """One of lit_transfer's own lines, on stderr, from rank zero only."""
    import os

    if os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("RANK", "0") == "0":
        print(message, file=sys.stderr, flush=True)


def quiet(verbose: bool = False) -> None:
    """Third-party log lines and warnings off (``verbose``: back on, at INFO)."""
    for name in _LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)
    pattern = r"(%s)(\..*)?$" % "|".join(THIRD_PARTY)
    if verbose:
        warnings.filters[:] = [f for f in warnings.filters
                               if not (f[0] == "ignore" and getattr(f[3], "pattern", None) == pattern)]
    else:
        warnings.filterwarnings("ignore", module=pattern)
