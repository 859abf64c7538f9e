"""`make demo`: the offline strategy comparison end to end, then the report.

    python -m lit_transfer.demo [--workers 2] [--out demo_runs/digits_strategies] [--sweep FILE]

Runs sweeps/digits_strategies.yaml under the fair protocol (docs/protocol.md): the source model trained once;
scratch, linear_probe, finetune, lp_ft and l2sp on rotated+inverted digits, 5 and 20 labels per class, 3 seeds
(each drawing its own labelled examples), each strategy at the same 200-step budget and on the same lr grid,
the lr chosen per seed on validation. Prints the comparison table and the path of the HTML report.
Re-running resumes where it stopped (and prints the identical table).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from lit_transfer import configs, report, sweep

SWEEP = Path("sweeps") / "digits_strategies.yaml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lit_transfer.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="demo_runs/digits_strategies")
    parser.add_argument("--sweep", default=str(SWEEP), help="sweep file (default: the shipped %(default)s)")
    args = parser.parse_args(argv)
    # ./sweeps/... if there is one, else the shipped file; the trials' configs/... paths resolve the same way
    # (lit_transfer.configs), so the demo runs from any directory, installed or in a checkout.
    sweep_file = configs.resolve(args.sweep, "sweeps")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    print(f"demo: running {sweep_file} with {args.workers} workers into {args.out} (resumable)", file=sys.stderr)
    rc = sweep.main([sweep_file, "--out", args.out, "--workers", str(args.workers)])
    if rc not in (0, 1):
        return rc
    if rc == 1:
        print("demo: some trials failed (see above); the report covers the rest", file=sys.stderr)
    return report.main([args.out]) or rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
