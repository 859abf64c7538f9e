"""Method bayes: proposals from W&B's own engine (its ``sweeps`` package), fed with every trial in ``out``."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from lit_transfer.sweep.errors import SweepError
from lit_transfer.sweep.planning import Trial, trial_id
from lit_transfer.sweep.trials import recorded_trials, trial_result, trial_state


def bayes_next(cfg: dict, out: Path, cap: int, constants: tuple[str, ...]) -> Callable[[], Trial | None]:
    """Proposals from W&B's own engine, fed with every trial in `out` (so a re-run continues the search)."""
    try:
        from sweeps import RunState, SweepRun, next_run
    except ImportError:
        raise SweepError("method bayes needs W&B's sweep engine: `pip install sweeps`, "
                         "or use method grid or random") from None
    metric = cfg["metric"]["name"]
    engine_cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
    engine_cfg["parameters"] = {n: {k: v for k, v in s.items()} for n, s in cfg["_params"].items()}
    started: set[str] = set()

    def history() -> list:
        runs = []
        for name, info in recorded_trials(out).items():
            d = out / "trials" / name
            state, summary = trial_state(d), {}
            if state == "ok":
                value = trial_result(d).metric(metric)
                summary = {metric: value} if value is not None else {}
            rs = {"ok": RunState.finished, "failed": RunState.failed}.get(
                state, RunState.running if name in started else RunState.failed)
            runs.append(SweepRun(name=name, state=rs, summary_metrics=summary,
                                 config={k: {"value": v} for k, v in info["params"].items()}))
        return runs

    def next_trial() -> Trial | None:
        runs = history()
        if len(runs) >= cap:
            return None
        proposal = next_run(engine_cfg, runs)
        if proposal is None:
            return None
        params = {k: (v["value"].item() if hasattr(v["value"], "item") else v["value"])
                  for k, v in proposal.config.items()}
        tid = trial_id(params, constants)
        started.add(tid)
        return Trial(tid, params, out / "trials" / tid)

    return next_trial
