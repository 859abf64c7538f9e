"""Frozen backbone computed once: a 20-epoch linear probe with the feature cache vs recomputing every epoch.

    python benches/feature_cache.py [--repeats 3] [--epochs 20] [--threads 1] [--models resnet18,small_cnn]

Both contenders run the same linear probe (whole backbone frozen from epoch 0, validation on both domains
every epoch, then test) through the real CLI (``--strategy linear_probe``), differing only in
``--feature_cache.enabled``. Rows:

* ``resnet18``: random-init ResNet-18 on digits resized to 32 px RGB, training on the source split
  (1,257 images): a backbone that dominates the step, like any real pretrained model.
* ``small_cnn``: the demo's small CNN on 8 px digits, target split with 20 shots/class: the demo's case, where
  Lightning's per-step costs, not the backbone, dominate.

Each repeat builds a fresh CLI and a fresh (empty) cache, so the cached contender pays for computing the
features once. Accuracy, the head's weights and the test metrics of both contenders are compared.
The last line is the summary (resnet18's ratio is the goal's figure: >= 10x).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from common import Timer, alternate, machine, median, muted, quiet, table  # noqa: E402

import torch  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
BASE = ["fit", "--config", str(REPO / "configs/data/digits_shift.yaml"),
        "--config", str(REPO / "configs/model/small_cnn.yaml"), "--config", str(REPO / "configs/strategy/linear_probe.yaml"),
        "--model.weights=null", "--run.test_after_fit=false"]
CASES = {
    "resnet18": ["--model.backbone=resnet18", "--data.train_on=source", "--data.source.image_size=32",
                 "--data.source.channels=3", "--data.target.image_size=32", "--data.target.channels=3"],
    "small_cnn": ["--data.target_shots=20"],
}


NO_CKPT = ["--checkpoint.save_last=false", "--checkpoint.save_top_k=0", "--checkpoint.monitor=null"]


def run(case: str, cache: bool, epochs: int, root: str, checkpoint: bool = True):
    from lit_transfer import features
    from lit_transfer.cli import TransferCLI

    features.default_cache().clear()  # every repeat pays for computing the features once
    args = [*BASE[1:], *CASES[case], f"--trainer.max_epochs={epochs}", f"--run.root={root}",
            f"--feature_cache.enabled={str(cache).lower()}", *([] if checkpoint else NO_CKPT)]
    os.environ.pop("LIT_TRANSFER_RUN_DIR", None)
    with muted():
        cli = TransferCLI(args=args, run=False)
        cli.datamodule.setup("fit")  # decoding the dataset: the same for both, not timed
        with Timer() as t:
            cli.trainer.fit(cli.model, cli.datamodule)
        metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items()}
        test = cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)
    return t.seconds, cli.model.head.state_dict(), metrics, test


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models", default="resnet18,small_cnn")
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    parser.add_argument("--no-checkpoint-rows", action=argparse.BooleanOptionalAction, default=True,
                        help="also time resnet18 without the per-epoch checkpoint files (last + best)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    common.set_clock(args.clock)
    quiet()
    print(f"machine: {machine(args.threads)}")
    rows, ratios, same = [], {}, {}
    with tempfile.TemporaryDirectory() as root:
        for case in args.models.split(","):
            results = {}

            def contender(cache: bool, checkpoint: bool = True):
                def go() -> float:
                    seconds, head, metrics, test = run(case, cache, args.epochs, root, checkpoint)
                    if checkpoint:
                        results[cache] = (head, metrics, test)
                    return seconds
                return go

            contenders = {"recompute every epoch": contender(False), "feature cache": contender(True)}
            if case == "resnet18" and args.no_checkpoint_rows:
                contenders["recompute, no checkpoint files"] = contender(False, checkpoint=False)
                contenders["feature cache, no checkpoint files"] = contender(True, checkpoint=False)
            times = alternate(contenders, args.repeats)
            (head_a, met_a, test_a), (head_b, met_b, test_b) = results[False], results[True]
            max_head = max(float((head_a[k] - head_b[k]).abs().max()) for k in head_a)
            max_metric = max(abs(met_a[k] - met_b[k]) for k in met_a)
            max_test = max(abs(a[k] - b[k]) for a, b in zip(test_a, test_b) for k in a)
            same[case] = max(max_head, max_metric, max_test) < 1e-4
            slow, fast = median(times["recompute every epoch"]), median(times["feature cache"])
            ratios[case] = slow / fast
            for name, t in (("recompute every epoch", slow), ("feature cache", fast)):
                rows.append([case, name, f"{t:.2f}", " ".join(f"{x:.2f}" for x in times[name])])
            if "feature cache, no checkpoint files" in times:
                a, b = median(times["recompute, no checkpoint files"]), median(times["feature cache, no checkpoint files"])
                ratios[case + " (no checkpoint files)"] = a / b
                for name in ("recompute, no checkpoint files", "feature cache, no checkpoint files"):
                    rows.append([case, name, f"{median(times[name]):.2f}", " ".join(f"{x:.2f}" for x in times[name])])
                rows.append([case, "speed-up, no checkpoint files", f"{a / b:.1f}x", ""])
            rows.append([case, "speed-up", f"{ratios[case]:.1f}x",
                         f"target/val_acc {met_a.get('target/val_acc', float('nan')):.4f} vs "
                         f"{met_b.get('target/val_acc', float('nan')):.4f}; val_acc {met_a['val_acc']:.4f} vs "
                         f"{met_b['val_acc']:.4f}; max |diff| head {max_head:.1e}, metrics {max_metric:.1e}, "
                         f"test {max_test:.1e}"])
    print(f"{args.epochs}-epoch linear probe (validation every epoch, then test); clock: {args.clock}; "
          f"median of {args.repeats} alternating repeats")
    print(table(rows, ["model", "contender", "median s", "all runs (s) / results"]))
    key = "resnet18" if "resnet18" in ratios else next(iter(ratios))
    goal = "met" if ratios[key] >= 10 and same[key] else "MISSED"
    summary = ", ".join(f"{k} {v:.1f}x" for k, v in ratios.items())
    print(f"feature cache: {args.epochs}-epoch linear probe speed-up = {summary}; same results: "
          f"{all(same.values())}; goal >= 10x ({key}) {goal}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
