"""The report mirrored to W&B: one run per experiment holding the comparison table."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from lit_transfer.report.inputs import PROG
from lit_transfer.report.tables import table

__all__ = ["log_to_wandb"]


def log_to_wandb(summary: dict, out: Path) -> list[Path]:
    """One W&B run per experiment with the comparison table: online when logged in, else offline under
    ``out/wandb`` (``wandb sync`` uploads it later); nothing with ``WANDB_MODE=disabled``. Returns the offline
    run directories it wrote."""
    from lit_transfer.tracking import resolve_wandb_mode

    mode = resolve_wandb_mode()
    if mode == "disabled" or not summary["rows"]:
        return []
    try:
        import wandb

        header, body = table(summary)
        offline = []
        for exp in dict.fromkeys(r["experiment"] for r in summary["rows"]):
            run = wandb.init(project=os.environ.get("WANDB_PROJECT", "lit_transfer"), group=exp,
                             job_type="report", name=f"report-{exp}", dir=str(out), mode=mode,
                             reinit="finish_previous")
            rows = [cells for r, cells in zip(summary["rows"], body) if r["experiment"] == exp]
            run.log({"transfer_summary": wandb.Table(columns=header, data=rows)})
            if mode == "offline":
                offline.append(Path(run.dir).parent)
            run.finish()
        if offline:
            print(f"W&B: report logged offline in {out / 'wandb'}; upload with "
                  f"`wandb sync {out / 'wandb'}/offline-run-*`", file=sys.stderr)
        return offline
    except Exception as e:  # the local report is the product; W&B is a mirror
        print(f"{PROG}: warning: W&B logging failed: {e}", file=sys.stderr)
        return []
