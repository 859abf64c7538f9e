"""The sweep's status line: counts of ok, failed, running and pending trials, and an ETA."""

from __future__ import annotations

import sys


def fmt_duration(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class Progress:
    """One status line on stderr: rewritten in place on a TTY, one line per event otherwise (CI logs)."""

    def __init__(self, name: str, total: int, workers: int, stream=None):
        self.name, self.total, self.workers = name, total, workers
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.ok = self.failed = self.running = 0
        self.durations: list[float] = []

    def line(self) -> str:
        remaining = self.total - self.ok - self.failed
        text = (f"[{self.name}] {self.ok}/{self.total} ok, {self.failed} failed, "
                f"{self.running} running, {remaining - self.running} pending")
        if self.durations and remaining:
            mean = sum(self.durations) / len(self.durations)
            text += f", ETA {fmt_duration(mean * remaining / self.workers)}"
        return text

    def update(self, event: str | None = None) -> None:
        if self.tty:
            if event:
                self.stream.write(f"\r\x1b[K{event}\n")
            self.stream.write(f"\r\x1b[K{self.line()}")
        elif event:
            self.stream.write(f"{event}  {self.line()}\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
