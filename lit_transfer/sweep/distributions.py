"""W&B's 18 parameter distributions: a spec normalised (W&B's inference rules, defaults, checks), one draw from
it, and the values a grid enumerates.

Checked before writing our own: W&B's sampler lives in its ``sweeps`` package (an optional install, needed only
for method bayes, not a dependency here); ``wandb`` itself ships only converters of some distributions to optuna
or Ax search spaces (no sampler), and scipy's would draw other values than these, changing every random sweep's
trial ids. Python's ``random`` draws each distribution in one line.
"""

from __future__ import annotations

import math
import random
from typing import Any

from lit_transfer.sweep.errors import SweepError

# distribution -> (required keys, defaults), as W&B defines them
DISTRIBUTIONS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "constant": (("value",), {}),
    "categorical": (("values",), {}),
    "categorical_w": (("values", "probabilities"), {}),
    "int_uniform": (("min", "max"), {}),
    "uniform": (("min", "max"), {}),
    "q_uniform": (("min", "max"), {"q": 1.0}),
    "log_uniform": (("min", "max"), {}),
    "log_uniform_values": (("min", "max"), {}),
    "q_log_uniform": (("min", "max"), {"q": 1.0}),
    "q_log_uniform_values": (("min", "max"), {"q": 1.0}),
    "inv_log_uniform": (("min", "max"), {}),
    "inv_log_uniform_values": (("min", "max"), {}),
    "normal": ((), {"mu": 0.0, "sigma": 1.0}),
    "q_normal": ((), {"mu": 0.0, "sigma": 1.0, "q": 1.0}),
    "log_normal": ((), {"mu": 0.0, "sigma": 1.0}),
    "q_log_normal": ((), {"mu": 0.0, "sigma": 1.0, "q": 1.0}),
    "beta": ((), {"a": 1.0, "b": 1.0}),
    "q_beta": ((), {"a": 1.0, "b": 1.0, "q": 1.0}),
}
SPEC_KEYS = {"value", "values", "distribution", "min", "max", "q", "mu", "sigma", "a", "b", "probabilities"}


def normalise(name: str, spec: dict) -> dict:
    """A parameter's spec with its ``distribution`` (inferred as W&B does) and that distribution's defaults;
    a spec W&B would reject is a :class:`SweepError`."""
    bad = sorted(set(spec) - SPEC_KEYS)
    if bad:
        raise SweepError(f"parameter {name}: unknown key {bad[0]!r}")
    spec = dict(spec)
    dist = spec.get("distribution")
    if dist is None:  # W&B's inference rules
        if "value" in spec:
            dist = "constant"
        elif "values" in spec:
            dist = "categorical_w" if "probabilities" in spec else "categorical"
        elif "min" in spec and "max" in spec:
            both_int = all(isinstance(spec[k], int) and not isinstance(spec[k], bool) for k in ("min", "max"))
            dist = "int_uniform" if both_int else "uniform"
        else:
            raise SweepError(f"parameter {name}: needs `value`, `values` or `distribution`")
    if dist not in DISTRIBUTIONS:
        raise SweepError(f"parameter {name}: unknown distribution {dist!r} (known: {', '.join(DISTRIBUTIONS)})")
    required, defaults = DISTRIBUTIONS[dist]
    for key in required:
        if key not in spec:
            raise SweepError(f"parameter {name}: distribution {dist} needs `{key}`")
    for key, default in defaults.items():
        spec.setdefault(key, default)
    spec["distribution"] = dist
    if "values" in required and (not isinstance(spec["values"], list) or not spec["values"]):
        raise SweepError(f"parameter {name}: `values` must be a non-empty list")
    if dist == "categorical_w" and len(spec["probabilities"]) != len(spec["values"]):
        raise SweepError(f"parameter {name}: `probabilities` must be as long as `values`")
    if "min" in required:
        lo, hi = spec["min"], spec["max"]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (lo, hi)):
            raise SweepError(f"parameter {name}: `min` and `max` must be numbers")
        if lo >= hi:
            raise SweepError(f"parameter {name}: min {lo} is not less than max {hi}")
        if dist == "int_uniform" and not (isinstance(lo, int) and isinstance(hi, int)):
            raise SweepError(f"parameter {name}: int_uniform needs integer `min` and `max`")
        if dist.endswith("_values") and lo <= 0:
            raise SweepError(f"parameter {name}: {dist} needs min > 0")
    return spec


def _quantise(x: float, q: float) -> float | int:
    v = round(x / q) * q
    return int(v) if isinstance(q, int) else v


def sample(spec: dict, rng: random.Random) -> Any:
    """One draw from a normalised parameter spec, with W&B's meaning of each distribution."""
    d, s = spec["distribution"], spec
    if d == "constant":
        return s["value"]
    if d == "categorical":
        return rng.choice(s["values"])
    if d == "categorical_w":
        return rng.choices(s["values"], weights=s["probabilities"])[0]
    if d == "int_uniform":
        return rng.randint(s["min"], s["max"])
    if d in ("uniform", "q_uniform"):
        x = rng.uniform(s["min"], s["max"])
    elif d in ("log_uniform", "q_log_uniform"):  # bounds are exponents
        x = math.exp(rng.uniform(s["min"], s["max"]))
    elif d in ("log_uniform_values", "q_log_uniform_values"):
        x = math.exp(rng.uniform(math.log(s["min"]), math.log(s["max"])))
    elif d == "inv_log_uniform":
        x = math.exp(-rng.uniform(s["min"], s["max"]))
    elif d == "inv_log_uniform_values":
        x = 1.0 / math.exp(rng.uniform(math.log(1 / s["max"]), math.log(1 / s["min"])))
    elif d in ("normal", "q_normal"):
        x = rng.gauss(s["mu"], s["sigma"])
    elif d in ("log_normal", "q_log_normal"):
        x = math.exp(rng.gauss(s["mu"], s["sigma"]))
    else:  # beta, q_beta
        x = rng.betavariate(s["a"], s["b"])
    return _quantise(x, s["q"]) if d.startswith("q_") else x


def grid_values(name: str, spec: dict) -> list:
    """Every value a grid search tries for a parameter; a continuous distribution is a :class:`SweepError`."""
    d = spec["distribution"]
    if d == "constant":
        return [spec["value"]]
    if d in ("categorical", "categorical_w"):
        return list(spec["values"])
    if d == "int_uniform":
        return list(range(spec["min"], spec["max"] + 1))
    if d == "q_uniform":
        n = int(math.floor((spec["max"] - spec["min"]) / spec["q"] + 1e-9))
        return [_quantise(spec["min"] + i * spec["q"], spec["q"]) for i in range(n + 1)]
    raise SweepError(f"parameter {name}: grid search cannot enumerate distribution {d}; "
                     "use `values` or method random")
