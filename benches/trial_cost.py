"""Sweep trial fixed cost: what a trial of ``lit-transfer sweep`` pays besides training and testing.

    python benches/trial_cost.py [--trials 10] [--steps 20] [--workers 1] [--modes fork,spawn] [--repo DIR]

Runs one small generated sweep (digits -> rotated+inverted digits, small CNN, few-shot protocol with
``--trainer.max_steps`` cut to ``--steps``; strategies x learning rates, ``--trials`` of them) with the
forking runner (trials forked from the pre-imported runner) and spawned (``fork=False``: every trial its own
``python -m lit_transfer``, as ``wandb agent`` runs it). A priming run first trains the shared source stage
and fills the data cache, so every measured trial only looks its stage up, as in a sweep after its first trial.

Per trial: wall seconds as the runner saw them (``trial.json`` ``wall_time_s``), seconds inside ``trainer.fit``
and its test (``result.json`` ``fit_time_s``), and the fixed cost = wall - fit (imports, parser, data, stage
lookup, writing the result). Medians over the trials; the sweep wall is the whole ``run_sweep`` call.

lit_transfer is imported from the running interpreter (or from ``--repo DIR``, also for the spawned trials),
so the same script measures an older checkout: where its ``result.json`` has no ``fit_time_s`` the fit and
fixed columns read n/a and only the wall figures compare.
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

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

STRATEGIES = ["finetune", "linear_probe", "lp_ft", "l2sp", "scratch"]  # the first trial trains the stage
LRS = [0.003, 0.01, 0.001, 0.03]


def sweep_file(root: Path, trials: int, steps: int) -> Path:
    lrs = LRS[: max(1, -(-trials // len(STRATEGIES)))]
    text = {
        "name": "trial_cost",
        "method": "grid",
        "run_cap": trials,
        "command": ["${env}", "${interpreter}", "-m", "lit_transfer", "fit",
                    "--config", "configs/data/digits_shift.yaml", "--config", "configs/model/small_cnn.yaml",
                    "--config", "configs/protocol/fewshot.yaml", "--model.weights=source", "--run.source_seed=0",
                    f"--run.stage_cache={root / 'stages'}", f"--trainer.max_steps={steps}",
                    f"--trainer.val_check_interval={steps}", "${args}"],
        "parameters": {"model.lr": {"values": lrs}, "strategy": {"values": STRATEGIES}},
    }
    path = root / "trial_cost.yaml"
    path.write_text(json.dumps(text, indent=1))  # JSON is YAML
    return path


# One sweep in a fresh interpreter, as `lit-transfer sweep` runs it: its wall time includes the runner's imports.
RUNNER = """
import sys
from lit_transfer.sweep import run_sweep
path, out, fork, workers, cap = sys.argv[1], sys.argv[2], sys.argv[3] == "1", int(sys.argv[4]), sys.argv[5]
kwargs = dict(workers=workers, run_cap=int(cap) if cap != "-" else None)
try:
    rc = run_sweep(path, out, fork=fork, **kwargs)
except TypeError:  # a runner without the fork option: it always spawned
    if fork:
        sys.exit("this lit_transfer's runner cannot fork trials; use --modes spawn")
    rc = run_sweep(path, out, **kwargs)
sys.exit(rc)
"""


def run(path: Path, out: Path, fork: bool, workers: int, run_cap: int | None = None) -> float:
    with open(out.with_suffix(".log"), "w") as log:
        t0 = time.perf_counter()
        rc = subprocess.call([sys.executable, "-c", RUNNER, str(path), str(out), "1" if fork else "0", str(workers),
                              "-" if run_cap is None else str(run_cap)], stdout=log, stderr=subprocess.STDOUT)
        wall = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(f"sweep in {out} failed (rc {rc}); see {out.with_suffix('.log')} and its trial logs")
    return wall


def per_trial(out: Path) -> dict[str, list]:
    rows: dict[str, list] = {"wall": [], "fit": [], "fixed": [], "cpu": []}
    for d in sorted((out / "trials").glob("*")):
        info = json.loads((d / "trial.json").read_text())
        result = json.loads((d / "result.json").read_text())
        wall, fit = info["wall_time_s"], result.get("fit_time_s")
        rows["wall"].append(wall)
        rows["cpu"].append(info.get("cpu_time_s"))
        rows["fit"].append(fit)
        rows["fixed"].append(None if fit is None else wall - fit)
    return rows


def med(xs: list) -> str:
    xs = [x for x in xs if x is not None]
    return f"{statistics.median(xs):.2f}" if xs else "n/a"


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps per trial (trainer.max_steps)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--modes", default="fork,spawn", help="comma-separated: fork, spawn")
    parser.add_argument("--repo", help="import lit_transfer from this checkout (default: the interpreter's)")
    parser.add_argument("--keep", help="keep the sweep directories here instead of a temporary folder")
    args = parser.parse_args(argv)
    if args.repo:  # the runner and every trial (spawned with `python -m`, or forked) import this checkout
        repo = str(Path(args.repo).resolve())
        os.environ["PYTHONPATH"] = os.pathsep.join([repo, *filter(None, [os.environ.get("PYTHONPATH")])])
        os.chdir(repo)  # `python -c`/`-m` put the working directory first on sys.path: make it the checkout too
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep or tmp).resolve()
        root.mkdir(parents=True, exist_ok=True)
        os.environ["LIT_TRANSFER_DATA_CACHE"] = str(root / "data_cache")  # fresh: the priming run fills it
        where = subprocess.run([sys.executable, "-c", "import lit_transfer, torch, os; print(os.path.dirname("
                                "lit_transfer.__file__), '| torch', torch.__version__)"],
                               capture_output=True, text=True, check=True).stdout.strip()
        print(f"lit_transfer: {where} | {os.cpu_count()} cores | python {sys.version.split()[0]}")
        path = sweep_file(root, args.trials, args.steps)
        modes = [m.strip() for m in args.modes.split(",") if m.strip()]
        # Priming (not measured): trains the shared source stage once, fills the data cache.
        run(path, root / "prime", fork=False, workers=1, run_cap=1)
        rows, missing_fit = [], False
        for mode in modes:
            wall = run(path, root / mode, fork=mode == "fork", workers=args.workers)
            t = per_trial(root / mode)
            missing_fit |= any(f is None for f in t["fit"])
            rows.append([mode, str(len(t["wall"])), f"{wall:.1f}", med(t["wall"]), med(t["cpu"]), med(t["fit"]),
                         med(t["fixed"])])
        print(f"trial_cost: {args.trials} trials x {args.steps} steps, workers {args.workers}; medians per trial")
        print(table(rows, ["mode", "trials", "sweep wall s", "trial wall s", "trial cpu s", "fit s", "fixed s"]))
        if missing_fit:
            print("fit/fixed n/a: this lit_transfer's result.json has no fit_time_s (older checkout); "
                  "compare the wall columns")
        fork_fixed = next((r[6] for r in rows if r[0] == "fork"), "n/a")
        if fork_fixed != "n/a":
            goal = "met" if float(fork_fixed) <= 1.5 else "MISSED"
            print(f"forked trial fixed cost (median): {fork_fixed} s; goal <= 1.5 s {goal}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
