"""Shared helpers for the benchmarks: quiet Lightning, thread pinning, alternating repeats, tables."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

import torch  # noqa: E402


def quiet() -> None:
    """Silence Lightning's info lines and the warnings a benchmark's tiny runs provoke."""
    warnings.filterwarnings("ignore")
    import lightning.pytorch  # noqa: F401 - it sets its loggers to INFO on import; override after

    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "lightning.fabric.utilities.seed",
                 "lightning.pytorch.utilities.rank_zero", "lit_transfer"):
        logging.getLogger(name).setLevel(logging.ERROR)


@contextlib.contextmanager
def muted():
    """Progress bars and prints go to a buffer (they still cost their formatting, like in a real run)."""
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        yield


def machine(threads: int) -> str:
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (torch threads {threads}), "
            f"torch {torch.__version__}, python {platform.python_version()}, "
            f"device {'cuda:' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu'}")


def alternate(contenders: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Run each contender ``repeats`` times, interleaved (A B A B ...), so drifting load hits all alike.

    Each callable returns the seconds it measured itself (excluding its own set-up if it chooses).
    """
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for r in range(repeats):
        order = list(contenders) if r % 2 == 0 else list(reversed(contenders))
        for name in order:
            times[name].append(contenders[name]())
    return times


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


class Timer:
    """Wall seconds and this process's CPU seconds (all threads) of a block.

    On a shared machine the CPU time is the steadier figure: it leaves out the time the process waited for a
    core. With one torch thread, CPU seconds ~ wall seconds on an idle machine.
    """

    def __enter__(self):
        self.t0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.t0
        self.cpu = time.process_time() - self.c0
        self.seconds = self.cpu if CLOCK == "cpu" else self.wall


CLOCK = "cpu"  # what Timer.seconds reports: "cpu" (process time) or "wall"


def set_clock(clock: str) -> None:
    global CLOCK
    CLOCK = clock
