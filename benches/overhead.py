"""Framework overhead: ``lit-transfer fit`` (TransferClassifier in Lightning's Trainer) vs a hand-written loop.

    python benches/overhead.py [--repeats 5] [--threads 1] [--models small_cnn,resnet18] [--validate]

Both contenders train the same model (same initial weights, same param groups and AdamW), on the same
batches (the data module's InMemoryLoader), with the same batch size and number of steps. The Lightning
contender is built by the real CLI (``TransferCLI(run=False)``: its trainer defaults, CSV logger, progress bar,
checkpoint callback) and timed from ``trainer.fit`` to its return, so trainer/dataloader set-up and every
hook count against it. The loop prints its loss every 10 steps like the CLI logs it every 10 steps.
``--bare`` adds two reference rows: the module in a bare ``L.Trainer``, and Lightning's floor (the same model
in a minimal manual-optimization LightningModule in a bare Trainer).

``--validate`` adds per-epoch validation on both domains and checkpointing (last + best) to both
contenders; the default measures training steps only (validation off, no checkpoint files).

Rows: small_cnn on digits (8 px, 1 channel) and resnet18 (random init) on digits resized to 32 px RGB.
Contenders alternate (A B B A ...); the figure is the median over repeats. The last line is the summary.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from common import Timer, alternate, machine, median, muted, quiet, table  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
BASE = ["fit", "--config", str(REPO / "configs/data/digits_shift.yaml"),
        "--config", str(REPO / "configs/model/small_cnn.yaml"), "--data.train_on=source", "--model.weights=null"]
CASES = {
    # name: (extra CLI args, epochs, train batches per epoch (None: all))
    "small_cnn": ([], 10, None),
    "resnet18": (["--model.backbone=resnet18", "--data.source.image_size=32", "--data.source.channels=3",
                  "--data.target.image_size=32", "--data.target.channels=3"], 2, 8),
}


def build_cli(case: str, root: str, validate: bool):
    from lit_transfer.cli import TransferCLI

    extra, epochs, limit = CASES[case]
    args = [*BASE, *extra, f"--trainer.max_epochs={epochs}", f"--run.root={root}", "--run.test_after_fit=false"]
    if limit is not None:
        args.append(f"--trainer.limit_train_batches={limit}")
    if not validate:
        args += ["--trainer.limit_val_batches=0", "--checkpoint.monitor=null", "--checkpoint.save_top_k=0",
                 "--checkpoint.save_last=false"]
    os.environ.pop("LIT_TRANSFER_RUN_DIR", None)
    with muted():
        cli = TransferCLI(args=args[1:], run=False)
    cli.datamodule.setup("fit")  # decoding the dataset is not framework overhead: done for both beforehand
    return cli, epochs, limit


def run_lightning(case: str, root: str, validate: bool) -> tuple[float, int]:
    cli, _, _ = build_cli(case, root, validate)
    with muted(), Timer() as t:
        cli.trainer.fit(cli.model, cli.datamodule)
    return t.seconds, cli.trainer.global_step


def run_bare(case: str, root: str, validate: bool) -> tuple[float, int]:
    """Reference: the same module in a bare ``L.Trainer`` (no logger, progress bar or checkpoints)."""
    import lightning as L

    cli, epochs, limit = build_cli(case, root, validate)
    trainer = L.Trainer(max_epochs=epochs, limit_train_batches=limit, logger=False, enable_progress_bar=False,
                        enable_checkpointing=False, enable_model_summary=False, num_sanity_val_steps=0,
                        limit_val_batches=None if validate else 0, default_root_dir=root)
    with muted(), Timer() as t:
        trainer.fit(cli.model, cli.datamodule)
    return t.seconds, trainer.global_step


def run_floor(case: str, root: str, validate: bool) -> tuple[float, int]:
    """Reference: Lightning's own floor. The same model in a minimal LightningModule with manual optimization
    (no logging, no hooks of its own) in a bare ``L.Trainer``: what any Lightning-based loop pays per step."""
    import lightning as L

    if validate:
        raise SystemExit("--bare with --validate: the floor row measures training steps only")
    cli, epochs, limit = build_cli(case, root, validate)

    class Minimal(L.LightningModule):
        def __init__(self, model):
            super().__init__()
            self.model, self.automatic_optimization = model, False

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = F.cross_entropy(self.model(x), y)
            optimizer = self.optimizers()
            optimizer.zero_grad(set_to_none=True)
            self.manual_backward(loss)
            optimizer.step()

        def configure_optimizers(self):
            return self.model.configure_optimizers()

    trainer = L.Trainer(max_epochs=epochs, limit_train_batches=limit, logger=False, enable_progress_bar=False,
                        enable_checkpointing=False, enable_model_summary=False, num_sanity_val_steps=0,
                        limit_val_batches=0, default_root_dir=root)
    dm = cli.datamodule
    with muted(), Timer() as t:
        trainer.fit(Minimal(copy.deepcopy(cli.model)), train_dataloaders=dm.train_dataloader())
    return t.seconds, trainer.global_step


def run_loop(case: str, root: str, validate: bool) -> tuple[float, int]:
    """What a user writes by hand: same model object, same optimizer, same loader; no framework."""
    # A script without Lightning does not have Lightning's NVML-based CUDA check (set when lightning is
    # imported), which AdamW runs on every step (~40 µs on a CPU). lit-transfer no longer edits the process
    # environment; this bench process drops it for all contenders alike (they share the process), so the rows
    # compare framework overhead, not that import side effect (Lightning sets it unconditionally on import).
    os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)
    cli, epochs, limit = build_cli(case, root, validate)
    model, dm = copy.deepcopy(cli.model), cli.datamodule
    ckpt_dir = Path(root) / "loop_ckpt"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    steps = 0
    with muted(), Timer() as t:
        optimizer = model.configure_optimizers()
        loader = dm.train_dataloader()
        val_loaders = dm.val_dataloader() if validate else []
        best = -1.0
        for epoch in range(epochs):
            loader.sampler.set_epoch(epoch)
            model.train()
            for i, (x, y) in enumerate(loader):
                if limit is not None and i >= limit:
                    break
                loss = F.cross_entropy(model(x), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                steps += 1
                if steps % 10 == 0:
                    print(f"epoch {epoch} step {steps} loss {loss.item():.4f}")
            if validate:
                model.eval()
                accs = []
                with torch.no_grad():
                    for vl in val_loaders:
                        correct = total = 0
                        for x, y in vl:
                            correct += int((model(x).argmax(-1) == y).sum())
                            total += len(y)
                        accs.append(correct / total)
                state = {"state_dict": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch}
                torch.save(state, ckpt_dir / "last.ckpt")
                if accs[0] > best:
                    best = accs[0]
                    torch.save(state, ckpt_dir / "best.ckpt")
    return t.seconds, steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: steadier on a shared box)")
    parser.add_argument("--models", default="small_cnn,resnet18")
    parser.add_argument("--validate", action="store_true", help="validate + checkpoint every epoch in both")
    parser.add_argument("--bare", action="store_true",
                        help="also time the module in a bare L.Trainer, and Lightning's floor (manual optimization)")
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                        help="cpu: process CPU time (steady on a shared machine); wall: elapsed time")
    args = parser.parse_args(argv)
    common.set_clock(args.clock)
    torch.set_num_threads(args.threads)
    quiet()
    print(f"machine: {machine(args.threads)}")
    rows, ratios = [], {}
    with tempfile.TemporaryDirectory() as root:
        for case in args.models.split(","):
            steps = {}

            def contender(fn, name):
                def go() -> float:
                    seconds, n = fn(case, root, args.validate)
                    steps[name] = n
                    return seconds
                return go

            fns = {"plain loop": run_loop, "lit-transfer": run_lightning, "bare Lightning": run_bare,
                   "Lightning floor": run_floor}
            if not args.bare:
                del fns["bare Lightning"], fns["Lightning floor"]
            for fn in fns.values():
                fn(case, root, args.validate)  # warm-up: imports, allocator, first-call costs
            times = alternate({name: contender(fn, name) for name, fn in fns.items()}, args.repeats)
            if len(set(steps.values())) != 1:
                raise SystemExit(f"step counts differ: {steps}")
            n = steps["plain loop"]
            med = {name: median(ts) for name, ts in times.items()}
            ratios[case] = med["plain loop"] / med["lit-transfer"]
            for name, t in med.items():
                rows.append([case, name, str(n), f"{t:.3f}", f"{n / t:.1f}", f"{1000 * t / n:.2f}",
                             " ".join(f"{x:.3f}" for x in times[name])])
            rows.append([case, "ratio", "", "", f"{ratios[case]:.3f}x", "", "lit-transfer / plain loop throughput"])
    mode = "train+validate+checkpoint" if args.validate else "train steps"
    print(f"mode: {mode}; clock: {args.clock}; median of {args.repeats} alternating repeats")
    print(table(rows, ["model", "contender", "steps", "median s", "steps/s", "ms/step", "all runs (s)"]))
    worst = min(ratios, key=ratios.get)
    goal = "met" if ratios[worst] >= 0.95 else "MISSED"
    summary = ", ".join(f"{k} {v:.3f}x" for k, v in ratios.items())
    print(f"overhead ({mode}): lit-transfer throughput / plain loop = {summary}; goal >= 0.95x {goal}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
