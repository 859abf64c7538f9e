"""Checkpoint writing: Lightning's stock ``TorchCheckpointIO`` vs lit-transfer's ``AtomicCheckpointIO``.

    python benches/checkpoint_io.py [--repeats 7] [--model resnet18]

The state is a timm model's ``state_dict`` (ResNet-18: 45 MB) in a Lightning-style checkpoint dict, written over
the same file again and again, as ``last.ckpt`` is every epoch. Contenders alternate; medians of CPU time.
The last line is the summary.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from common import Timer, alternate, machine, median, table  # noqa: E402

import torch  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    args = parser.parse_args(argv)
    common.set_clock(args.clock)
    common.quiet()
    import timm
    from lightning.pytorch.plugins.io import TorchCheckpointIO

    from lit_transfer.checkpointing import AtomicCheckpointIO

    print(f"machine: {machine(torch.get_num_threads())}")
    state = {"state_dict": timm.create_model(args.model, num_classes=10).state_dict(), "epoch": 1}
    mb = sum(t.numel() * t.element_size() for t in state["state_dict"].values()) / 2**20
    ios = {"Lightning TorchCheckpointIO": TorchCheckpointIO(), "AtomicCheckpointIO() (default, crc32)":
           AtomicCheckpointIO(), "AtomicCheckpointIO(crc32=False) (opt-out)": AtomicCheckpointIO(crc32=False)}
    with tempfile.TemporaryDirectory() as root:
        def contender(name, io):
            path = Path(root) / f"{len(name)}.ckpt"

            def go() -> float:
                with Timer() as t:
                    io.save_checkpoint(state, path)
                return t.seconds
            go()  # the file exists from here on: every timed save replaces it
            return go
        times = alternate({name: contender(name, io) for name, io in ios.items()}, args.repeats)
    med = {name: median(ts) for name, ts in times.items()}
    rows = [[name, f"{1000 * m:.1f}", " ".join(f"{1000 * x:.1f}" for x in times[name])] for name, m in med.items()]
    print(f"{args.model} checkpoint ({mb:.0f} MB), clock: {args.clock}; median of {args.repeats} alternating repeats")
    print(table(rows, ["checkpoint io", "median ms", "all runs (ms)"]))
    stock, ours = med["Lightning TorchCheckpointIO"], med["AtomicCheckpointIO() (default)"]
    print(f"checkpoint io: {args.model} save {1000 * stock:.1f} ms -> {1000 * ours:.1f} ms ({stock / ours:.1f}x faster)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
