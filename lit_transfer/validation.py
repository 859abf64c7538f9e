"""Range checks for user-facing numbers, done when a config is parsed (before any data is loaded).

Each failure is one :class:`~lit_transfer.errors.TransferConfigError` line naming the key, the value and the
allowed range, e.g. ``data.batch_size=0 is out of range: must be an integer >= 1``. The data module and the
model check their own arguments in ``__init__``; the CLI checks the trainer's and the optimizer's.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional

from lit_transfer.errors import TransferConfigError

__all__ = ["check_int", "check_float", "check_trainer", "check_seed", "check_init_args", "check_data_args",
           "check_model_args", "MAX_SEED"]

MAX_SEED = 2**32 - 1  # numpy's seed range, which Lightning's seed_everything enforces


def _fail(key: str, value: Any, allowed: str) -> TransferConfigError:
    return TransferConfigError(f"{key}={value!r} is out of range: must be {allowed}")


def check_int(key: str, value: Any, *, min: int, max: Optional[int] = None, none: Optional[str] = None,
              also: tuple[int, str] | None = None) -> None:
    """An integer in ``[min, max]``; ``none`` describes what null means (null is then allowed); ``also`` is one
    extra allowed value and its meaning (e.g. ``(-1, "unlimited")``)."""
    if value is None and none is not None:
        return
    if also is not None and value == also[0] and not isinstance(value, bool):
        return
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= min and (max is None or value <= max)
    if not ok:
        allowed = f"an integer >= {min}" if max is None else f"an integer in [{min}, {max}]"
        if also is not None:
            allowed += f", or {also[0]} ({also[1]})"
        if none is not None:
            allowed += f", or null ({none})"
        raise _fail(key, value, allowed)


def check_float(key: str, value: Any, *, low: float = -math.inf, high: float = math.inf, low_open: bool = False,
                high_open: bool = False, none: Optional[str] = None) -> None:
    """A finite number in the interval from ``low`` to ``high`` (open at either end when asked)."""
    if value is None and none is not None:
        return
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = number and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        if low == -math.inf and high == math.inf:
            allowed = "a finite number"
        elif high == math.inf:
            allowed = f"a finite number {'>' if low_open else '>='} {low:g}"
        elif low == -math.inf:
            allowed = f"a finite number {'<' if high_open else '<='} {high:g}"
        else:
            allowed = f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        if none is not None:
            allowed += f", or null ({none})"
        raise _fail(key, value, allowed)


def check_seed(key: str, value: Any) -> None:
    """``seed_everything``: true/false (Lightning picks or skips the seed) or an integer in numpy's range."""
    if isinstance(value, bool) or value is None:
        return
    check_int(key, value, min=0, max=MAX_SEED)


def _get(cfg: Any, key: str, default: Any = None) -> Any:
    if isinstance(cfg, Mapping):
        return cfg.get(key, default)
    return getattr(cfg, key, default)


def _check_limit(key: str, value: Any) -> None:
    """``limit_*_batches`` / ``val_check_interval``: a fraction in (0, 1] or a number of batches >= 1."""
    if value is None:
        return
    if isinstance(value, float) and math.isfinite(value) and value > 1 and value.is_integer():
        return  # a whole number of batches given as a float (the CLI parses "2" so): Lightning counts batches
    if isinstance(value, float):
        ok = math.isfinite(value) and 0 < value <= 1
    else:
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
    if not ok:
        raise _fail(key, value, "a fraction in (0, 1] or a whole number of batches >= 1")


def check_trainer(trainer: Any, prefix: str = "trainer") -> None:
    """The trainer's numbers: epochs and steps (``-1`` means unlimited), batch limits, accumulation, clipping.

    ``fast_dev_run`` and the limits are checked so that a run always trains at least one step: a run that
    trained zero steps is an error, never a result.
    """
    check_int(f"{prefix}.max_epochs", _get(trainer, "max_epochs"), min=1, also=(-1, "unlimited"),
              none="Lightning's default: 1000 unless max_steps is set")
    check_int(f"{prefix}.min_epochs", _get(trainer, "min_epochs"), min=0, none="no minimum")
    check_int(f"{prefix}.max_steps", _get(trainer, "max_steps", -1), min=1, also=(-1, "unlimited"))
    check_int(f"{prefix}.min_steps", _get(trainer, "min_steps"), min=0, none="no minimum")
    for key in ("limit_train_batches", "limit_val_batches", "limit_test_batches", "limit_predict_batches"):
        value = _get(trainer, key)
        if key != "limit_train_batches" and value == 0 and not isinstance(value, bool):
            continue  # 0 turns validation/testing off: allowed
        _check_limit(f"{prefix}.{key}", value)
    _check_limit(f"{prefix}.val_check_interval", _get(trainer, "val_check_interval"))
    fast = _get(trainer, "fast_dev_run", False)
    if not isinstance(fast, bool):
        check_int(f"{prefix}.fast_dev_run", fast, min=0)  # 0: off
    check_int(f"{prefix}.accumulate_grad_batches", _get(trainer, "accumulate_grad_batches", 1), min=1)
    check_int(f"{prefix}.log_every_n_steps", _get(trainer, "log_every_n_steps"), min=1, none="Lightning's default")
    check_int(f"{prefix}.check_val_every_n_epoch", _get(trainer, "check_val_every_n_epoch", 1), min=1,
              none="validate only at val_check_interval")
    check_float(f"{prefix}.gradient_clip_val", _get(trainer, "gradient_clip_val"), low=0.0, none="no clipping")
    check_int(f"{prefix}.num_sanity_val_steps", _get(trainer, "num_sanity_val_steps", 0), min=0,
              also=(-1, "all validation batches"))


# Common optimizer and LR-scheduler arguments (``init_args`` of ``model.optimizer`` / ``model.lr_scheduler``):
# key → (kwargs of check_float or check_int, integer?). Other keys are left to the class itself.
_INIT_ARGS: dict[str, tuple[dict, bool]] = {
    "weight_decay": ({"low": 0.0}, False),
    "momentum": ({"low": 0.0, "high": 1.0, "high_open": True}, False),
    "dampening": ({"low": 0.0, "high": 1.0}, False),
    "eps": ({"low": 0.0, "low_open": True}, False),
    "alpha": ({"low": 0.0, "high": 1.0}, False),  # RMSprop's smoothing constant
    "gamma": ({"low": 0.0, "low_open": True}, False),
    "eta_min": ({"low": 0.0}, False),
    "factor": ({"low": 0.0, "high": 1.0, "low_open": True, "high_open": True}, False),
    "min_lr": ({"low": 0.0}, False),
    "step_size": ({"min": 1}, True),
    "T_max": ({"min": 1}, True),
    "T_0": ({"min": 1}, True),
    "patience": ({"min": 0}, True),
}


def check_init_args(key: str, spec: Any) -> None:
    """Range-check the common numeric ``init_args`` of an optimizer or LR scheduler config (``key`` names it)."""
    init = _get(spec, "init_args") if spec is not None and not callable(spec) else None
    if not init:
        return
    for name, value in (init.items() if hasattr(init, "items") else vars(init).items()):
        if name == "betas" and isinstance(value, (list, tuple)):
            for i, beta in enumerate(value):
                check_float(f"{key}.init_args.betas[{i}]", beta, low=0.0, high=1.0, high_open=True)
        elif name in _INIT_ARGS:
            kwargs, integer = _INIT_ARGS[name]
            (check_int if integer else check_float)(f"{key}.init_args.{name}", value, **kwargs)


def check_data_args(*, target_shots, source_shots, split_seed, val_fraction, test_fraction, batch_size,
                    eval_batch_size, val_shots: Any = "auto", shots_seed: Any = None, specs: Mapping = {}) -> None:
    """``DomainPairDataModule``'s numbers (``data.*``); ``specs``: ``{role: DomainSpec}``."""
    for role, spec in specs.items():
        check_int(f"data.{role}.image_size", getattr(spec, "image_size", None), min=1, none="native size")
    for role, shots in (("target", target_shots), ("source", source_shots)):
        check_int(f"data.{role}_shots", shots, min=1, none="all labelled examples")
    if val_shots != "auto":
        check_int("data.val_shots", val_shots, min=1, none="the whole target val split")
    check_int("data.split_seed", split_seed, min=0)
    check_int("data.shots_seed", shots_seed, min=0, none="the split seed")
    check_float("data.val_fraction", val_fraction, low=0.0, high=1.0, low_open=True, high_open=True)
    check_float("data.test_fraction", test_fraction, low=0.0, high=1.0, low_open=True, high_open=True)
    if val_fraction + test_fraction >= 1:
        raise TransferConfigError(f"data.val_fraction + data.test_fraction = {val_fraction + test_fraction:g} is "
                                  "out of range: must be < 1 (the rest is the train split)")
    check_int("data.batch_size", batch_size, min=1)
    check_int("data.eval_batch_size", eval_batch_size, min=1)


def check_model_args(*, lr, backbone_lr_scale, layer_decay, label_smoothing) -> None:
    """``TransferClassifier``'s numbers (``model.*``)."""
    check_float("model.lr", lr, low=0.0, low_open=True)
    check_float("model.backbone_lr_scale", backbone_lr_scale, low=0.0)
    check_float("model.layer_decay", layer_decay, low=0.0, high=1.0, low_open=True)
    check_float("model.label_smoothing", label_smoothing, low=0.0, high=1.0, high_open=True)
