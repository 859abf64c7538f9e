"""GPU knobs: resnet50 fine-tuning at 224 px through lit-transfer vs a plain PyTorch loop, same knobs.

    python benches/gpu.py [--repeats 3] [--steps 40] [--batch-size 64] [--knobs bf16,channels_last,compile]
    python benches/gpu.py --smoke      # tiny CPU run (resnet18, 32 px, 3 steps): checks the script, no figures

Data: random uint8 images (a synthetic domain registered for the benchmark, decoded once into memory like
every lit_transfer domain), 10 classes. Both contenders train the same resnet50 (random init) with AdamW at
the same batch size and number of steps, with the same knobs:

* ``bf16``: ``--trainer.precision=bf16-mixed`` vs ``torch.autocast("cuda", torch.bfloat16)`` in the loop;
* ``channels_last``: ``--model.channels_last=true`` vs ``model.to(memory_format=torch.channels_last)``;
* ``compile``: ``--model.compile=true`` vs ``torch.compile`` of the loop's backbone.

The first epoch (compilation, cudnn autotuning) is a warm-up and excluded: each contender runs 2 epochs of
``--steps`` steps and the second is timed (wall clock, CUDA synchronised). Contenders alternate; medians.
Not part of CI. The last line is the summary.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from common import alternate, machine, median, muted, quiet, table  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def register_random_domain(n: int, size: int) -> None:
    from lit_transfer.data.domains import Domain, register_domain

    @register_domain("bench_random", num_classes=10, in_chans=3)
    def _load(spec):
        g = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
        return Domain(images, torch.randint(0, 10, (n,), generator=g))


class EpochTimer:
    """Lightning callback: wall time of the last training epoch, CUDA synchronised."""

    def __init__(self):
        import lightning as L

        class _CB(L.Callback):
            def on_train_epoch_start(cb, trainer, pl_module):
                _sync()
                cb.t0 = time.perf_counter()

            def on_train_epoch_end(cb, trainer, pl_module):
                _sync()
                self.seconds = time.perf_counter() - cb.t0

        self.callback = _CB()
        self.seconds = float("nan")


def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def cli_args(a, root: str) -> list[str]:
    args = ["--config", str(REPO / "configs/model/resnet50.yaml"), "--model.weights=null",
            f"--model.backbone={a.backbone}", "--data.source.name=bench_random", "--data.target.name=bench_random",
            "--data.train_on=source", f"--data.batch_size={a.batch_size}", "--trainer.max_epochs=2",
            f"--trainer.limit_train_batches={a.steps}", "--trainer.limit_val_batches=0",
            "--checkpoint.monitor=null", "--checkpoint.save_top_k=0", "--checkpoint.save_last=false",
            "--run.test_after_fit=false", f"--run.root={root}", "--model.lr_scheduler=null",
            f"--trainer.precision={'bf16-mixed' if 'bf16' in a.knobs else '32-true'}",
            f"--model.channels_last={str('channels_last' in a.knobs).lower()}",
            f"--model.compile={str('compile' in a.knobs).lower()}"]
    if not torch.cuda.is_available():
        args.append("--trainer.accelerator=cpu")
    return args


def run_lightning(a, root: str) -> float:
    from lit_transfer.cli import TransferCLI

    os.environ.pop("LIT_TRANSFER_RUN_DIR", None)
    timer = EpochTimer()
    with muted():
        cli = TransferCLI(args=cli_args(a, root), run=False)
        cli.trainer.callbacks.append(timer.callback)
        cli.trainer.fit(cli.model, cli.datamodule)
    return timer.seconds


def run_loop(a, root: str) -> float:
    from lit_transfer.cli import TransferCLI

    os.environ.pop("LIT_TRANSFER_RUN_DIR", None)
    with muted():
        cli = TransferCLI(args=cli_args(a, root), run=False)  # only to build the same model and data
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    base = copy.deepcopy(cli.model).to(device)
    backbone, head = base.backbone.model, base.head
    mean, std = base.mean.to(device), base.std.to(device)
    if "channels_last" in a.knobs:
        backbone = backbone.to(memory_format=torch.channels_last)
    if "compile" in a.knobs:
        backbone = torch.compile(backbone)
    params = list(backbone.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=5e-4, weight_decay=0.05)
    dm = cli.datamodule
    dm.setup("fit")
    loader = dm.train_dataloader()
    bf16 = "bf16" in a.knobs
    seconds = float("nan")
    for epoch in range(2):
        loader.sampler.set_epoch(epoch)
        _sync()
        t0 = time.perf_counter()
        for i, (x, y) in enumerate(loader):
            if i >= a.steps:
                break
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            x = (x.float().div_(255) - mean) / std
            if "channels_last" in a.knobs:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = F.cross_entropy(head(backbone(x)), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        _sync()
        seconds = time.perf_counter() - t0
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--knobs", default="bf16,channels_last,compile")
    parser.add_argument("--smoke", action="store_true", help="tiny CPU run that only checks the script works")
    a = parser.parse_args(argv)
    a.knobs = set(filter(None, a.knobs.split(",")))
    if a.smoke:
        a.repeats, a.steps, a.batch_size, a.size, a.backbone = 1, 3, 8, 32, "resnet18"
        a.knobs = {"channels_last"}
    elif not torch.cuda.is_available():
        print("no CUDA device: this benchmark needs a GPU (use --smoke for a CPU check of the script)")
        return 0
    common.set_clock("wall")
    quiet()
    print(f"machine: {machine(torch.get_num_threads())}")
    register_random_domain(n=max(a.batch_size * a.steps, 256), size=a.size)
    with tempfile.TemporaryDirectory() as root:
        run_lightning(a, root), run_loop(a, root)  # warm-up: CUDA context, compile caches
        times = alternate({"plain loop": lambda: run_loop(a, root), "lit-transfer": lambda: run_lightning(a, root)},
                          a.repeats)
    n = a.steps * a.batch_size
    rows = [[name, f"{median(t):.3f}", f"{n / median(t):.1f}", " ".join(f"{x:.3f}" for x in t)]
            for name, t in times.items()]
    print(f"{a.backbone} at {a.size} px, batch {a.batch_size}, {a.steps} timed steps (2nd epoch), knobs "
          f"{sorted(a.knobs)}; wall clock; median of {a.repeats} alternating repeats")
    print(table(rows, ["contender", "median s", "images/s", "all runs (s)"]))
    ratio = median(times["plain loop"]) / median(times["lit-transfer"])
    print(f"gpu: lit-transfer throughput / plain loop = {ratio:.3f}x ({a.backbone} {a.size} px, {sorted(a.knobs)})"
          + (" [smoke run on CPU: not a measurement]" if a.smoke else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
