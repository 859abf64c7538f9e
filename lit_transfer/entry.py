"""``lit-transfer`` and ``python -m lit_transfer``: dispatch to the subcommand's module.

    lit-transfer fit|validate|test|predict --config ...      # lit_transfer.cli (Lightning CLI)
    lit-transfer sweep sweeps/digits_strategies.yaml         # lit_transfer.sweep: W&B sweep files, offline
    lit-transfer report sweep_runs/digits_strategies         # lit_transfer.report: gain over scratch
    lit-transfer rank --config ... --candidates DIR_OR_CKPT  # lit_transfer.ranking.rank: before fine-tuning

This module sits on top: it imports the subcommands, none of them imports it, and the CLI never imports
sweep/report/rank (a sweep trial runs the CLI), so the package's import graph stays acyclic.
"""

from __future__ import annotations

from typing import Optional

from lit_transfer.plan.command_line import TOOLS, process_args  # TOOLS: everything else goes to the Lightning CLI

__all__ = ["main", "TOOLS"]


def main(argv: Optional[list[str]] = None) -> None:
    argv = process_args() if argv is None else list(argv)
    tool = argv[0] if argv else None
    if tool == "sweep":
        from lit_transfer.sweep import main as tool_main
    elif tool == "report":
        from lit_transfer.report import main as tool_main
    elif tool == "rank":
        from lit_transfer.ranking.rank import main as tool_main
    else:
        from lit_transfer.cli import main as cli_main

        cli_main(argv)
        return
    raise SystemExit(tool_main(argv[1:]))


if __name__ == "__main__":
    main()
