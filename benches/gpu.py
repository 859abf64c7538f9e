"""GPU knobs: fine-tuning throughput of lit-transfer vs Lightning's floor vs a plain PyTorch loop, same knobs.

    python benches/gpu.py --quick      # every knob set for resnet50@224 and resnet18@32, sized for a short lease
    python benches/gpu.py [--backbone resnet50 --size 224 --batch-size 128 --steps 40 --repeats 3
                           --knobs bf16,channels_last,compile]
    python benches/gpu.py --smoke      # tiny CPU run (resnet18, 32 px, 3 steps): checks the script, no figures

Contenders, per workload and knob set, all training the *same* backbone and head objects (random init) with
AdamW at the same batch size and number of steps, on the same uint8 batches (pinned on CUDA):

* ``plain loop``: a hand-written loop (``non_blocking`` copies, normalisation on the GPU, autocast);
* ``Lightning floor``: a minimal manual-optimization LightningModule in a bare ``L.Trainer`` (no logger, bar,
  checkpoint or hooks of its own): the least any Lightning-based framework pays;
* ``lit-transfer``: the real CLI's trainer (``TransferCLI``: logger, progress bar, divergence guard, the model's
  callbacks) fitting the ``TransferClassifier`` the CLI built.

Knobs: ``bf16`` (``--trainer.precision=bf16-mixed`` / ``torch.autocast``), ``channels_last``
(``--model.channels_last=true`` / the same memory format), ``compile`` (``--model.compile=true``: the backbone
compiled once, in place, so the three contenders share its compiled graphs instead of each compiling it again).

Set-up is seconds: the random domain is a 256-image pool tiled to the epoch's size (no per-image generation),
the model is built once per workload and knob set, and the first epoch of every contender is a warm-up
(compilation, cudnn autotuning, CUDA graphs); the second is timed (wall clock, CUDA synchronised). Contenders
alternate; medians. Not part of CI. The last line is the summary.
"""

from __future__ import annotations

import argparse
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
KNOB_SETS = ["fp32", "bf16", "bf16,channels_last", "bf16,channels_last,compile"]
QUICK = [  # (backbone, size, batch, timed steps): every knob set of each fits a short GPU lease
    ("resnet50", 224, 128, 20),
    ("resnet18", 32, 64, 60),
]


def register_random_domain(name: str, n: int, size: int) -> None:
    from lit_transfer.data.registry import Domain, register_domain

    @register_domain(name, num_classes=10, in_chans=3)
    def _load(spec):
        g = torch.Generator().manual_seed(0)
        pool = torch.randint(0, 256, (256, 3, size, size), dtype=torch.uint8, generator=g)
        images = pool.repeat(-(-n // 256), 1, 1, 1)[:n]  # tiling a pool: seconds, not a 15 s build
        return Domain(images, torch.randint(0, 10, (n,), generator=g))


def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def epoch_timer():
    """A Lightning callback recording the wall time of the last training epoch, CUDA synchronised."""
    import lightning as L

    class EpochTimer(L.Callback):
        seconds = float("nan")

        def on_train_epoch_start(self, trainer, pl_module):
            _sync()
            self.t0 = time.perf_counter()

        def on_train_epoch_end(self, trainer, pl_module):
            _sync()
            self.seconds = time.perf_counter() - self.t0

    return EpochTimer()


def cli_args(w, root: str) -> list[str]:
    args = ["--config", str(REPO / "configs/model/resnet50.yaml"), "--model.weights=null",
            f"--model.backbone={w.backbone}", f"--data.source.name={w.domain}", f"--data.target.name={w.domain}",
            "--data.train_on=source", f"--data.batch_size={w.batch_size}", "--trainer.max_epochs=2",
            f"--trainer.limit_train_batches={w.steps}", "--trainer.limit_val_batches=0",
            "--checkpoint.monitor=null", "--checkpoint.save_top_k=0", "--checkpoint.save_last=false",
            "--run.test_after_fit=false", f"--run.root={root}", "--model.lr_scheduler=null",
            "--feature_cache.enabled=false",
            f"--trainer.precision={'bf16-mixed' if 'bf16' in w.knobs else '32-true'}",
            f"--model.channels_last={str('channels_last' in w.knobs).lower()}",
            f"--model.compile={str('compile' in w.knobs).lower()}"]
    if not torch.cuda.is_available():
        args.append("--trainer.accelerator=cpu")
    return args


def build_cli(w, root: str):
    from lit_transfer.cli import TransferCLI

    os.environ.pop("LIT_TRANSFER_RUN_DIR", None)
    with muted():
        return TransferCLI(args=cli_args(w, root), run=False)


def loader(w, model):
    """The train batches every contender uses (uint8, pinned on CUDA), from the CLI's data module."""
    from lit_transfer.data.loader import InMemoryLoader

    images, labels = w.datamodule.subset("source", "train")
    return InMemoryLoader(images, labels, w.batch_size, shuffle=True, drop_last=True,
                          pin_memory=torch.cuda.is_available())


def normalise(model, x):
    return model.preprocess(x)  # uint8 → float on the GPU (and channels_last): the same code in every contender


def run_lit_transfer(w, root: str) -> float:
    cli = build_cli(w, root)  # a fresh trainer with the CLI's callbacks; the shared model
    timer = epoch_timer()
    cli.trainer.callbacks.append(timer)
    with muted():
        cli.trainer.fit(w.model, cli.datamodule)
    return timer.seconds


def run_floor(w, root: str) -> float:
    import lightning as L

    class Floor(L.LightningModule):
        def __init__(self, model):
            super().__init__()
            self.model, self.automatic_optimization = model, False

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = F.cross_entropy(self.model.head(self.model.backbone(normalise(self.model, x))), y)
            optimizer = self.optimizers()
            optimizer.zero_grad(set_to_none=True)
            self.manual_backward(loss)
            optimizer.step()

        def configure_optimizers(self):
            return torch.optim.AdamW(self.model.parameters(), lr=5e-4, weight_decay=0.05)

    timer = epoch_timer()
    trainer = L.Trainer(max_epochs=2, limit_train_batches=w.steps, logger=False, enable_progress_bar=False,
                        enable_checkpointing=False, enable_model_summary=False, num_sanity_val_steps=0,
                        limit_val_batches=0, default_root_dir=root, callbacks=[timer],
                        precision="bf16-mixed" if "bf16" in w.knobs else "32-true",
                        accelerator="gpu" if torch.cuda.is_available() else "cpu", devices=1)
    with muted():
        trainer.fit(Floor(w.model), train_dataloaders=loader(w, w.model))
    return timer.seconds


def run_loop(w, root: str) -> float:
    model = w.model
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.05)
    batches = loader(w, model)
    seconds = float("nan")
    for epoch in range(2):
        batches.sampler.set_epoch(epoch)
        _sync()
        t0 = time.perf_counter()
        for i, (x, y) in enumerate(batches):
            if i >= w.steps:
                break
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled="bf16" in w.knobs):
                loss = F.cross_entropy(model.head(model.backbone(normalise(model, x))), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        _sync()
        seconds = time.perf_counter() - t0
    return seconds


class Workload:
    def __init__(self, backbone: str, size: int, batch_size: int, steps: int, knobs: set[str], root: str):
        self.backbone, self.size, self.batch_size, self.steps, self.knobs = backbone, size, batch_size, steps, knobs
        n = batch_size * steps
        self.domain = f"bench_random_{size}_{n}"
        register_random_domain(self.domain, n=n, size=size)
        t0 = time.perf_counter()
        cli = build_cli(self, root)
        self.model, self.datamodule = cli.model, cli.datamodule
        self.datamodule.setup("fit")
        self.model.configure_model()  # compile (in place) once: every contender runs these compiled graphs
        self.setup_s = time.perf_counter() - t0


def measure(backbone, size, batch_size, steps, knobs: set[str], repeats: int, root: str) -> list[list[str]]:
    t0 = time.perf_counter()
    w = Workload(backbone, size, batch_size, steps, knobs, root)
    contenders = {"plain loop": lambda: run_loop(w, root), "Lightning floor": lambda: run_floor(w, root),
                  "lit-transfer": lambda: run_lit_transfer(w, root)}
    times = alternate(contenders, repeats)
    wall = time.perf_counter() - t0
    n = steps * batch_size
    label = f"{backbone}@{size} b{batch_size} {'+'.join(sorted(knobs)) or 'fp32'}"
    rows = [[label, name, f"{median(t):.3f}", f"{n / median(t):,.0f}",
             f"{median(times['plain loop']) / median(t):.3f}x", " ".join(f"{x:.3f}" for x in t)]
            for name, t in times.items()]
    rows[-1].append(f"setup {w.setup_s:.1f} s, all {wall:.0f} s")
    for r in rows[:-1]:
        r.append("")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="every knob set for resnet50@224 and resnet18@32, "
                        "one repeat (a short GPU lease: about 4 min)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--knobs", default="bf16,channels_last,compile", help="comma-separated, or 'fp32'")
    parser.add_argument("--smoke", action="store_true", help="tiny CPU run that only checks the script works")
    a = parser.parse_args(argv)
    if a.smoke:
        runs = [("resnet18", 32, 8, 3, set())]
        a.repeats = 1
    elif not torch.cuda.is_available():
        print("no CUDA device: this benchmark needs a GPU (use --smoke for a CPU check of the script)")
        return 0
    elif a.quick:
        a.repeats = 1
        runs = [(b, s, bs, st, set(k.split(",")) - {"fp32"}) for b, s, bs, st in QUICK for k in KNOB_SETS]
    else:
        runs = [(a.backbone, a.size, a.batch_size, a.steps, set(a.knobs.split(",")) - {"fp32", ""})]
    common.set_clock("wall")
    quiet()
    print(f"machine: {machine(torch.get_num_threads())}")
    t0 = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as root:
        for backbone, size, batch_size, steps, knobs in runs:
            rows += measure(backbone, size, batch_size, steps, knobs, a.repeats, root)
            print(table(rows[-3:], HEADER), flush=True)  # progress, in case the lease ends first
    print(f"\ntimed: 2nd epoch of each contender, wall clock, CUDA synchronised; median of {a.repeats} "
          f"alternating repeat(s); total {time.perf_counter() - t0:.0f} s")
    print(table(rows, HEADER))
    floor = {r[0]: float(r[2]) for r in rows if r[1] == "Lightning floor"}
    summary = "; ".join(f"{r[0]} {r[4]} loop, {floor[r[0]] / float(r[2]):.3f}x floor"
                        for r in rows if r[1] == "lit-transfer")
    print(f"gpu: lit-transfer throughput vs plain loop / Lightning floor: {summary}"
          + (" [smoke run on CPU: not a measurement]" if a.smoke else ""))
    return 0


HEADER = ["workload", "contender", "median s", "images/s", "vs loop", "all runs (s)", "notes"]

if __name__ == "__main__":
    sys.exit(main())
