"""A trial's process: its environment, and how it starts: forked from the pre-imported runner when it runs our
CLI on one device, spawned otherwise (as ``wandb agent`` does). Both have the bits of ``subprocess.Popen`` the
runner uses, and record the CPU time the trial used."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys

from lit_transfer.plan.command_line import has_option, set_process_args

DEFAULT_THREADS = 1


def trial_env(threads: int = DEFAULT_THREADS, base: dict | None = None) -> dict[str, str]:
    """The environment of every trial. The intra-op thread count is fixed by ``threads``, never derived from
    the number of workers: it changes floating-point reduction order, so ``--workers 1`` and ``--workers 2``
    would otherwise train different models from one sweep file (the CLI records the count in result.json)."""
    from lit_transfer.tracking import wandb_logged_in

    env = dict(os.environ if base is None else base)
    # A trial's directory is its own: one inherited from the runner's environment would be stale.
    env.pop("LIT_TRANSFER_RUN_DIR", None)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)  # torch sizes its intra-op pool from OMP_NUM_THREADS
    if "WANDB_MODE" not in env and not wandb_logged_in(env):
        env["WANDB_MODE"] = "offline"
    env["PYTHONUNBUFFERED"] = "1"  # the log tail of a killed trial must hold its last lines
    return env


def forkable_args(cmd: list[str], fork: bool = True) -> list[str] | None:
    """The CLI arguments when ``cmd`` is ``[env] <this python> -m lit_transfer ...`` on one device, else None.

    Such trials can be forked from this process instead of spawned: torch, Lightning and timm are imported
    once for the whole sweep instead of once per trial (~6 s each on a small CPU). Multi-device runs are
    spawned, since DDP re-launches its workers from the command line.
    """
    i = 1 if cmd and os.path.basename(cmd[0]) == "env" else 0
    if not fork or not hasattr(os, "fork"):
        return None
    # after env, this interpreter itself: VAR=value prefixes (and other programs) are left to a real process
    if len(cmd) < i + 3 or os.path.realpath(cmd[i]) != os.path.realpath(sys.executable):
        return None
    if cmd[i + 1 : i + 3] != ["-m", "lit_transfer"]:
        return None
    args = cmd[i + 3 :]
    if (any("ddp" in a for a in args) or has_option(args, "--trainer.devices")
            or has_option(args, "--trainer.num_nodes")):
        return None
    return args


def warm_up(args: list[str]) -> None:
    """Once per runner, before its first fork: import what every trial imports and parse one trial's command
    line (``--print_config``, its output discarded), so each forked trial finds the modules loaded and
    jsonargparse's caches filled instead of paying for them itself. A command line that fails to parse here
    fails in its trial, with the trial's log."""
    import io

    import lit_transfer.cli
    import lit_transfer.gain  # noqa: F401 - imported by every fit's result
    import lit_transfer.tracking  # noqa: F401

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            lit_transfer.cli.main([*args, "--print_config"])
        except (Exception, SystemExit):  # noqa: BLE001 - only a warm-up
            pass


class ForkedTrial:
    """A trial forked from the (pre-imported) runner, with the bits of ``subprocess.Popen`` the runner uses."""

    def __init__(self, args: list[str], log, env: dict[str, str]):
        import gc

        import lit_transfer.cli  # noqa: F401 - imported before forking, so children start warm

        gc.collect()
        gc.freeze()  # children never scan (and so never copy-on-write) the runner's objects; nor collect them
        sys.stdout.flush()
        sys.stderr.flush()
        self.returncode: int | None = None
        self.pid = os.fork()
        if self.pid:
            # Own process group, set from both sides so a killpg right after fork never misses it: the
            # runner stops trials with killpg, and the terminal's Ctrl-C reaches the runner only.
            with contextlib.suppress(OSError):
                os.setpgid(self.pid, self.pid)
        else:  # the child: never returns
            code = 1
            try:
                os.setpgid(0, 0)
                devnull = os.open(os.devnull, os.O_RDONLY)
                os.dup2(devnull, 0)
                os.dup2(log.fileno(), 1)
                os.dup2(log.fileno(), 2)
                # the runner's sys.stdout/stderr may be wrappers (pytest, a TTY progress line): use the log fds
                sys.stdout = open(1, "w", buffering=1, closefd=False)
                sys.stderr = open(2, "w", buffering=1, closefd=False)
                os.environ.clear()
                os.environ.update(env)
                import torch

                torch.set_num_threads(int(env.get("OMP_NUM_THREADS", "1")))
                set_process_args(args)
                from lit_transfer.cli import main as cli_main

                cli_main(args)
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except BaseException:  # noqa: BLE001 - a trial's crash is recorded from its log
                import traceback

                traceback.print_exc()
            finally:
                with contextlib.suppress(Exception):
                    sys.stdout.flush()
                    sys.stderr.flush()
                os._exit(code)

    cpu_time_s: float | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            _reap(self, os.WNOHANG)
        return self.returncode

    def wait(self) -> int:
        if self.returncode is None:
            _reap(self, 0)
        return self.returncode


class SpawnedTrial(subprocess.Popen):
    """A trial spawned as its own process: ``subprocess.Popen`` that also records the CPU time it used."""

    cpu_time_s: float | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                _reap(self, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere: Popen knows what to report
                return super().poll()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None and timeout is None:
            with contextlib.suppress(ChildProcessError):
                _reap(self, 0)
        return super().wait(timeout) if self.returncode is None else self.returncode


def _reap(proc, options: int) -> None:
    """``os.wait4`` on a trial's process: its exit code (-N when killed by signal N, like Popen) and the CPU
    time (user + system) of the process and of the children it waited for (a source stage, loader workers)."""
    pid, status, usage = os.wait4(proc.pid, options)
    if pid:
        proc.cpu_time_s = usage.ru_utime + usage.ru_stime
        proc.returncode = os.waitstatus_to_exitcode(status)
