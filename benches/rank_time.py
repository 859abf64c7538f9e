"""Wall time of ``lit-transfer rank`` on 5 candidates over the digits target (goal: under a minute on 2 cores).

    python benches/rank_time.py [--repeats 3] [--threads 2] [--candidates DIR_OR_ITEMS ...] [--shots-seeds 0]

Each repeat is the whole command in a fresh process (Python start, imports, data loading, building and loading
every candidate, embedding the target's labelled examples, all four scores, rank.json), timed from outside,
with an empty feature cache. Default candidates, made here so the bench needs nothing trained: lit_transfer
checkpoints (with 10-class source heads) of small_cnn, small_cnn_tiny and resnet10t, a second small_cnn, and
random-init resnet18 (11M parameters, no head: LEEP/NCE through Gaussian-mixture pseudo-labels). Pass
``--candidates sweep_runs/rank_digits/stages`` to time real source models (the first 5 found are used).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402,F401 - offline environment, repo on sys.path


def make_candidates(folder: Path) -> list[str]:
    import torch

    from lit_transfer.module import TransferClassifier

    items = []
    for i, backbone in enumerate(["small_cnn", "small_cnn", "small_cnn_tiny", "resnet10t"]):
        torch.manual_seed(i)
        model = TransferClassifier(backbone=backbone, num_classes=10, in_chans=1)
        path = folder / f"{backbone}-{i}" / "checkpoints" / "last.ckpt"
        path.parent.mkdir(parents=True)
        torch.save({"state_dict": model.state_dict(), "hyper_parameters": {"backbone": backbone}}, path)
        items.append(str(path))
    return items + ["resnet18@random"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--candidates", nargs="+")
    parser.add_argument("--shots-seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--config", default="configs/data/digits_shift.yaml")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.candidates:
            from lit_transfer.plan.weights import File
            from lit_transfer.ranking.rank import parse_candidates

            items = [str(c.weights) if isinstance(c.weights, File) else c.spec
                     for c in parse_candidates(args.candidates)][:5]
        else:
            items = make_candidates(tmp / "candidates")
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1"}
        cmd = [sys.executable, "-m", "lit_transfer", "rank", "--config", args.config, "--candidates", *items,
               "--shots-seeds", *map(str, args.shots_seeds), "--threads", str(args.threads), "--device", "cpu",
               "--out", str(tmp / "rank.json")]
        walls, inner = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
            walls.append(time.perf_counter() - start)
            if proc.returncode != 0:
                sys.exit(f"rank failed:\n{proc.stderr[-2000:]}")
            payload = json.loads((tmp / "rank.json").read_text())
            inner.append(payload["wall_s"])
        print(proc.stdout)
        print(f"machine: {common.machine(args.threads)}")
        print(f"{len(items)} candidates, {payload['target']['examples']} labelled target examples x "
              f"{len(args.shots_seeds)} draw(s), {args.repeats} fresh processes")
        print(f"command wall s: median {statistics.median(walls):.1f}, max {max(walls):.1f} "
              f"(all: {', '.join(f'{w:.1f}' for w in walls)}); inside rank() (data + models + scores): "
              f"median {statistics.median(inner):.1f}")
        print(f"goal (< 60 s on 2 cores): {'met' if max(walls) < 60 else 'NOT met'}")


if __name__ == "__main__":
    main()
