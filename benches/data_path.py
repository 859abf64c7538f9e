"""Data path: InMemoryLoader (+ the module's preprocessing) alone vs the small CNN's training throughput.

    python benches/data_path.py [--repeats 5] [--threads 1] [--epochs 10]

Digits (source split, 1,257 images, 8 px) at the CLI's batch size (64). Contenders, in samples per second:

* ``loader``: iterate the train ``InMemoryLoader`` (shuffled, seeded per epoch) for ``--epochs`` epochs.
* ``loader + preprocess``: the same, plus the model's uint8 → normalised float conversion of each batch.
* ``loader + augment``: the same with the batch-level augmentation (``hflip`` + ``crop_padding: 1``).
* ``training step``: forward + backward + optimizer step of the small CNN on pre-fetched batches
  (what the loader has to keep up with).

Goal: the loader with preprocessing delivers >= 5x the training throughput. The last line is the summary.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from common import Timer, alternate, machine, median, quiet, table  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    common.set_clock(args.clock)
    quiet()
    from lit_transfer.data import DomainPairDataModule, DomainSpec
    from lit_transfer.data.augment import augment_batch
    from lit_transfer.module import TransferClassifier

    print(f"machine: {machine(args.threads)}")
    dm = DomainPairDataModule(target=DomainSpec(shifts=[{"name": "rotate", "degrees": 90}, {"name": "invert"}]),
                              train_on="source", batch_size=64)
    dm.setup("fit")
    loader = dm.train_dataloader()
    model = TransferClassifier("small_cnn", num_classes=dm.num_classes, in_chans=dm.in_chans)
    optimizer = model.configure_optimizers()
    n_per_epoch = len(loader) * loader.batch_size

    def loader_only(preprocess: bool = False, augment: bool = False):
        def go() -> float:
            gen = torch.Generator().manual_seed(0)
            with Timer() as t, torch.no_grad():
                for epoch in range(args.epochs):
                    loader.sampler.set_epoch(epoch)
                    for x, y in loader:
                        if augment:
                            x = augment_batch(x, gen, hflip=True, crop_padding=1)
                        if preprocess:
                            x = model.preprocess(x)
            return t.seconds
        return go

    batches = list(loader)

    def train() -> float:
        model.train()
        with Timer() as t:
            for _ in range(args.epochs):
                for x, y in batches:
                    loss = F.cross_entropy(model(x), y)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
        return t.seconds

    contenders = {"loader": loader_only(), "loader + preprocess": loader_only(preprocess=True),
                  "loader + augment + preprocess": loader_only(preprocess=True, augment=True), "training step": train}
    for fn in contenders.values():
        fn()  # warm-up
    times = alternate(contenders, args.repeats)
    samples = n_per_epoch * args.epochs
    rate = {k: samples / median(v) for k, v in times.items()}
    rows = [[k, f"{median(v):.4f}", f"{rate[k]:,.0f}", f"{rate[k] / rate['training step']:.1f}x",
             " ".join(f"{x:.4f}" for x in v)] for k, v in times.items()]
    print(f"digits source train split, batch {loader.batch_size}, {args.epochs} epochs = {samples} samples; "
          f"clock: {args.clock}; median of {args.repeats} alternating repeats")
    print(table(rows, ["contender", "median s", "samples/s", "vs training", "all runs (s)"]))
    ratio = rate["loader + preprocess"] / rate["training step"]
    aug = rate["loader + augment + preprocess"] / rate["training step"]
    goal = "met" if ratio >= 5 else "MISSED"
    print(f"data path: loader + preprocess delivers {ratio:.1f}x the small CNN's training throughput "
          f"(with augmentation {aug:.1f}x); goal >= 5x {goal}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
