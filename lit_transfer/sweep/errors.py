"""The sweep tool's one error type."""

from __future__ import annotations


class SweepError(ValueError):
    """Bad sweep file or arguments; printed as one line."""
