"""``lit-transfer report DIR``: the command line. Collects and summarises the results under DIR, adds the
ranking check when a ``rank.json`` is there, writes the report's files, prints the table and mirrors it to W&B
when asked or logged in."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lit_transfer.report.inputs import PROG, ReportError, collect, parse_baseline
from lit_transfer.report.render import Section, write_report
from lit_transfer.report.summary import summarise
from lit_transfer.report.tables import markdown
from lit_transfer.report.wandb_log import log_to_wandb

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Compare transfer strategies from result.json files.")
    parser.add_argument("dir", help="directory searched recursively for result.json")
    parser.add_argument("--out", help="report directory (default: DIR/report)")
    parser.add_argument("--baseline", default="scratch",
                        help="strategy the gains are measured against, paired with its runs of the same backbone "
                             "and input size; STRATEGY@BACKBONE pairs every row with that backbone's runs "
                             "(e.g. scratch@small_cnn)")
    parser.add_argument("--conf", type=float, default=0.95, help="confidence level of the intervals")
    parser.add_argument("--wandb", action="store_true",
                        help="also log the table to W&B (online when logged in, else an offline run under the "
                             "report directory); without it, only when logged in and WANDB_MODE allows online")
    parser.add_argument("--rank", help="rank.json of `lit-transfer rank` to check against the fine-tuning results "
                        "(default: DIR/rank.json when present)")
    return parser


def _summary(results: list[dict], notes: list[str], baseline: str, conf: float) -> dict:
    """The summary of ``results``, the collection notes first; a note when the baseline never ran."""
    base_strategy, base_backbone = parse_baseline(baseline)
    summary = summarise(results, baseline, conf)
    summary["notes"] = notes + summary["notes"]
    if not any(r["strategy"] == base_strategy and base_backbone in (None, r["backbone"]) for r in summary["rows"]):
        summary["notes"].append(f"no {baseline} runs: gains over the baseline cannot be computed")
    return summary


def _sections(rank: str | None, root: Path, results: list[dict], out: Path) -> list[Section]:
    """Predicted transferability vs measured accuracy (lit_transfer.ranking) when a rank file is given or found."""
    rank_file = Path(rank) if rank else root / "rank.json"
    if not (rank or rank_file.is_file()):
        return []
    from lit_transfer.ranking.compare import report_section

    return [report_section(rank_file, results, out)]


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        root = Path(args.dir)
        if not root.is_dir():
            raise ReportError(f"not a directory: {root}")
        if not 0 < args.conf < 1:
            raise ReportError(f"--conf must be between 0 and 1, got {args.conf}")
        results, notes = collect(root)
        if not results:
            raise ReportError(f"no result.json under {root}; run `lit-transfer sweep` or `lit-transfer fit` first")
        summary = _summary(results, notes, args.baseline, args.conf)
        out = Path(args.out) if args.out else root / "report"
        sections = _sections(args.rank, root, results, out)
        files = write_report(summary, out, f"Results under {root}", sections)
    except ReportError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    print(markdown(summary))
    for section in sections:
        print(section.console)
    from lit_transfer.tracking import wandb_online

    if args.wandb or wandb_online():  # a report is local; a W&B run only when asked or logged in
        log_to_wandb(summary, files["html"].parent)
    print(f"HTML report: {files['html']}")
    return 0
