"""Transferability ranking: score candidate sources/backbones on a target before fine-tuning any of them.

``scores`` holds the scores (LogME, LEEP, NCE, H-score) as pure functions; ``rank`` the ``lit-transfer rank``
command; ``compare`` checks a ranking against measured fine-tuning results (``lit-transfer report``).
"""

from lit_transfer.ranking.scores import METRICS, hscore, leep, logme, nce

__all__ = ["METRICS", "logme", "leep", "nce", "hscore"]
