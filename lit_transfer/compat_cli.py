"""The one place that leans on a library's non-public surface for the CLI: jsonargparse's help formatter.

``fit --help`` printed ~920 lines, most of them Lightning's multi-paragraph Trainer docstrings and fully
qualified "known subclasses" lists. argparse's documented way to change help text is a formatter class that
overrides ``_get_help_string``; this one keeps each option's first sentence, its type and default, and lists
known subclasses by class name (``--KEY.help NAME`` accepts those names). Every option stays listed.
"""

from __future__ import annotations

import re

from jsonargparse import DefaultHelpFormatter

__all__ = ["CompactHelpFormatter", "first_sentence", "short_class_names"]

_SUBCLASSES = re.compile(r"(known subclasses: )([^)]*)")
_SENTENCE_END = re.compile(r"(?<=[a-z0-9)`'\"])\.(\s|$)")
_ABBREVIATIONS = ("e.g", "i.e", "etc", "vs", "cf")  # a period after these does not end the sentence


def first_sentence(text: str) -> str:
    """The first sentence (or paragraph) of a help text, whitespace collapsed."""
    paragraph = re.split(r"\n\s*\n", text.strip(), maxsplit=1)[0]
    paragraph = " ".join(paragraph.split())
    for match in _SENTENCE_END.finditer(paragraph):
        if not paragraph[: match.start()].endswith(_ABBREVIATIONS):
            return paragraph[: match.start() + 1]
    return paragraph


def short_class_names(help_text: str) -> str:
    """``known subclasses: a.b.C, d.E`` → ``known subclasses: C, E`` (a name two classes share keeps its path)."""

    def shorten(match: re.Match) -> str:
        paths = [p.strip() for p in match.group(2).split(",")]
        names = [p.rsplit(".", 1)[-1] for p in paths]
        shown = [n if names.count(n) == 1 else p for p, n in zip(paths, names)]
        return match.group(1) + ", ".join(shown)

    return _SUBCLASSES.sub(shorten, help_text)


class CompactHelpFormatter(DefaultHelpFormatter):
    """jsonargparse's help, each option's description cut to its first sentence, subclasses by class name."""

    def _get_help_string(self, action) -> str:
        full = super()._get_help_string(action)
        description = action.help if isinstance(action.help, str) else ""
        if description and full.startswith(description) and "%(" not in description:
            full = first_sentence(description) + full[len(description):]
        return short_class_names(full)
