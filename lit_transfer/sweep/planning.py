"""Which trials a grid or random sweep runs, and their ids: deterministic, so a re-run finds the same trials."""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

from lit_transfer.sweep.distributions import grid_values, sample
from lit_transfer.sweep.errors import SweepError


@dataclass
class Trial:
    """One planned trial: its id, its parameter values and its directory ``<out>/trials/<id>``."""

    id: str
    params: dict
    dir: Path


def trial_id(params: dict, constants: tuple[str, ...] = ()) -> str:
    """Readable slug of the varying values plus a short hash of all values: stable across re-runs."""
    digest = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:8]
    parts = []
    for key in sorted(params, key=lambda k: (k.rsplit(".", 1)[-1], k)):
        if key in constants:
            continue
        v = params[key]
        text = f"{v:.4g}" if isinstance(v, float) else str(v)
        parts.append(f"{key.rsplit('.', 1)[-1]}={text}")
    slug = re.sub(r"[^A-Za-z0-9.=_+-]", "", "-".join(parts))[:80]
    return f"{slug}-{digest}" if slug else digest


def plan_trials(cfg: dict, run_cap: int | None = None) -> list[dict]:
    """All parameter sets for grid/random (deterministic, so a re-run finds the same trial ids)."""
    params, method = cfg["_params"], cfg["method"]
    cap = run_cap if run_cap is not None else cfg.get("run_cap")
    if method == "grid":
        names = list(params)
        combos = itertools.product(*(grid_values(n, params[n]) for n in names))
        out = [dict(zip(names, c)) for c in combos]
        return out[:cap] if cap else out
    if method == "random":
        if not cap:
            raise SweepError("method random needs `run_cap` in the sweep file or --run-cap")
        seed = hashlib.sha256(json.dumps(cfg["parameters"], sort_keys=True, default=str).encode()).hexdigest()
        rng = random.Random(int(seed[:16], 16))
        out, seen = [], set()
        for _ in range(cap * 100):  # categorical-only spaces repeat; duplicates would share a trial dir
            p = {n: sample(s, rng) for n, s in params.items()}
            key = json.dumps(p, sort_keys=True, default=str)
            if key not in seen:
                seen.add(key)
                out.append(p)
            if len(out) == cap:
                break
        return out
    raise SweepError(f"plan_trials does not handle method {method}")
