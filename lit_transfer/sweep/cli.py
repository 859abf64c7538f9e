"""``lit-transfer sweep FILE [--out DIR] [--workers N] ...``: the sweep tool's arguments."""

from __future__ import annotations

import argparse
import sys

from lit_transfer.plan.command_line import process_args
from lit_transfer.sweep.errors import SweepError
from lit_transfer.sweep.processes import DEFAULT_THREADS
from lit_transfer.sweep.run import run_sweep

PROG = "lit-transfer sweep"


def main(argv: list[str] | None = None) -> int:
    """Run the sweep file ``argv`` names (default: this process's arguments); the exit code."""
    parser = argparse.ArgumentParser(prog=PROG, description="Run a W&B sweep file locally, one subprocess "
                                     "per trial, resumable.")
    parser.add_argument("file", help="sweep YAML (W&B sweep format)")
    parser.add_argument("--out", help="output directory (default: sweep_runs/<file stem>)")
    parser.add_argument("--workers", type=int, default=1, help="trials run in parallel (default 1)")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                        help="intra-op CPU threads of every trial (default 1), whatever --workers is: results are "
                             "bit-identical for any number of workers")
    parser.add_argument("--retry-failed", action="store_true", help="rerun trials that failed before (grid/random)")
    parser.add_argument("--run-cap", type=int, help="maximum number of trials (overrides run_cap)")
    parser.add_argument("--dry-run", action="store_true", help="list trials and commands, run nothing")
    args = parser.parse_args(process_args() if argv is None else argv)
    try:
        return run_sweep(args.file, args.out, args.workers, args.retry_failed, args.run_cap, args.dry_run,
                         threads=args.threads)
    except SweepError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
