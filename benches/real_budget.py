"""Does the real-transfer answer hold when every budget doubles? (docs/real_transfer.md)

    python benches/real_budget.py [--x1 sweep_runs/real_fashion_mnist] [--out bench_runs/real_budget] [--workers 2]

Re-runs part of sweeps/real_fashion_mnist.yaml and sweeps/real_fashion_mnist_cnn.yaml (scratch, linear_probe,
finetune and the small CNN at 5 and 20 labels per class, the same 3 seeds, lr grid and labelled examples) at
twice the protocol's budget (300 steps, validation every 30: the same number of selection points), then prints
each gain at 150 and at 300 steps side by side, against the same network from scratch and against the small
CNN, with each row's convergence verdict. ``--x1``: the finished full sweep (its report's rows at 150 steps).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lit_transfer import report, sweep  # noqa: E402

SWEEPS = {"lite0": "real_fashion_mnist", "small_cnn": "real_fashion_mnist_cnn"}
STRATEGIES = ["scratch", "linear_probe", "finetune"]
SHOTS = [5, 20]


def doubled(name: str, out: Path) -> Path:
    cfg = yaml.safe_load((REPO / "sweeps" / f"{name}.yaml").read_text())
    cfg["name"] = f"{name}_x2"
    at = cfg["command"].index("${args}")
    cfg["command"][at:at] = ["--trainer.max_steps=300", "--trainer.val_check_interval=30"]
    params = cfg["parameters"]
    params["strategy"]["values"] = [s for s in params["strategy"]["values"] if s in STRATEGIES]
    params["data.target_shots"]["values"] = SHOTS
    path = out / f"{name}_x2.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def gains(root: Path, baseline: str) -> dict:
    results, _ = report.collect(root)
    summary = report.summarise([r for r in results if r.get("target_shots") in SHOTS], baseline=baseline)
    return {(r["label"], r["target_shots"]): r for r in summary["rows"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--x1", default="sweep_runs/real_fashion_mnist")
    parser.add_argument("--out", default="bench_runs/real_budget")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for sub, name in SWEEPS.items():
        rc = sweep.main([str(doubled(name, out)), "--out", str(out / "x2" / sub), "--workers", str(args.workers)])
        if rc != 0:
            return rc
    for baseline in ("scratch", "scratch@small_cnn"):
        a, b = gains(Path(args.x1), baseline), gains(out / "x2", baseline)
        print(f"\ngain over {baseline}:\n")
        print("| row | shots | acc @150 | acc @300 | gain @150 steps (pp) | gain @300 steps (pp) | converged @150 / @300 |")
        print("|---|---|---|---|---|---|---|")
        for key in sorted(b, key=lambda k: (k[0], k[1])):
            if key not in a:
                continue
            x, y = a[key], b[key]

            def gain(r: dict) -> str:
                if r.get("gain_mean") is None:
                    return "—"
                claimed = "" if r.get("gain_claimed", True) else " (not claimed)"
                return f"{100 * r['gain_mean']:+.1f} ± {100 * (r['gain_ci'] or 0):.1f}{claimed}"

            print(f"| {key[0]} | {key[1]} | {100 * x['acc_mean']:.1f} | {100 * y['acc_mean']:.1f} | {gain(x)} | "
                  f"{gain(y)} | {report.tables._converged(x)} / {report.tables._converged(y)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
