"""Does a reported gain survive doubling every strategy's budget? (docs/protocol.md)

    python benches/budget_doubling.py [--workers 2] [--out bench_runs/budget]

Runs sweeps/digits_strategies.yaml twice, at its protocol budget (configs/protocol/fewshot.yaml: 200 steps,
validation every 20) and at twice that (400 steps, validation every 40: the same number of selection points),
same lr grid, seeds and labelled examples; reports both and prints each strategy's gain over scratch side
by side. Its last line is the largest change of a gain, in percentage points (the protocol's goal: <= 3 pp).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lit_transfer import report, sweep  # noqa: E402

SWEEP = REPO / "sweeps" / "digits_strategies.yaml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="bench_runs/budget")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = yaml.safe_load(SWEEP.read_text())
    cfg["name"] = "digits_strategies_x2"
    at = cfg["command"].index("${args}")
    cfg["command"][at:at] = ["--trainer.max_steps=400", "--trainer.val_check_interval=40"]
    doubled = out / "digits_strategies_x2.yaml"
    doubled.write_text(yaml.safe_dump(cfg, sort_keys=False))
    gains = {}
    for name, path in (("x1", SWEEP), ("x2", doubled)):
        rc = sweep.main([str(path), "--out", str(out / name), "--workers", str(args.workers)])
        if rc != 0:
            return rc
        results, _ = report.collect(out / name)
        summary = report.summarise(results)
        report.write_report(summary, out / name / "report", f"Results under {out / name}")
        gains[name] = {(r["strategy"], r["target_shots"]): r for r in summary["rows"] if "gain_mean" in r}
    print("| strategy | shots | gain @200 steps (pp) | gain @400 steps (pp) | change (pp) | converged @200 / @400 |")
    print("|---|---|---|---|---|---|")
    worst = 0.0
    for key in sorted(gains["x1"], key=str):
        a, b = gains["x1"][key], gains["x2"].get(key)
        if b is None:
            continue
        change = 100 * (b["gain_mean"] - a["gain_mean"])
        worst = max(worst, abs(change))
        conv = f"{report.tables._converged(a)} / {report.tables._converged(b)}"
        print(f"| {key[0]} | {key[1]} | {100 * a['gain_mean']:+.1f} ± {100 * (a['gain_ci'] or 0):.1f} | "
              f"{100 * b['gain_mean']:+.1f} ± {100 * (b['gain_ci'] or 0):.1f} | {change:+.1f} | {conv} |")
    pairs = {f"{s}@{n}": [gains["x1"][(s, n)]["gain_mean"], gains["x2"][(s, n)]["gain_mean"]]
             for (s, n) in gains["x1"] if (s, n) in gains["x2"]}
    (out / "budget_doubling.json").write_text(json.dumps(pairs, indent=2))
    print(f"largest change of a gain when every budget doubles: {worst:.1f} pp")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
