"""Reading transferred weights safely: local files, lit_transfer checkpoints and the timm hub.

Nothing here unpickles arbitrary objects: safetensors, or ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
import re
import socket
import warnings
from pathlib import Path
from typing import Mapping

import torch
from torch import nn
from timm.models import adapt_input_conv

from lit_transfer.errors import TransferConfigError

__all__ = ["read_state_dict", "read_checkpoint", "backbone_state_dict", "load_into", "hub_reachable",
           "LIT_BACKBONE_PREFIX"]

# Prefixes that wrappers add around a model's own keys (DDP, EMA, Lightning modules, timm train scripts).
_WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.")
# Keys of a lit_transfer checkpoint that belong to the backbone.
LIT_BACKBONE_PREFIX = "backbone.model."


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a flat ``{name: tensor}`` mapping from a weights file, never unpickling objects."""
    return read_checkpoint(path)[0]


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """``(state_dict, hyper_parameters)`` of a weights file (no hyper-parameters: ``{}``), never unpickling
    objects."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise TransferConfigError(
            f"weights file not found: {path}; pass an existing .safetensors/.pth/.ckpt file, "
            "'pretrained' for timm hub weights, or null to train from scratch"
        )
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path)), {}
        except Exception as err:  # noqa: BLE001 - SafetensorError for truncated/corrupt files
            raise TransferConfigError(f"cannot read safetensors file {path} ({err}); is it complete?") from err
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": noise before our one-line error
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises several types for unsafe/corrupt files
        raise TransferConfigError(f"cannot read weights file {path}: {_load_problem(err)}") from err
    hparams = obj.get("hyper_parameters") if isinstance(obj, Mapping) else None
    for key in ("state_dict", "model", "model_state_dict", "state_dict_ema"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise TransferConfigError(f"weights file {path} holds no state_dict of tensors")
    return dict(obj), dict(hparams) if isinstance(hparams, Mapping) else {}


def _load_problem(err: Exception) -> str:
    """What is wrong with a file ``torch.load(weights_only=True)`` refused, in our words: PyTorch's own message
    advises disabling the safety check, which would run whatever code the file carries."""
    text = str(err)
    if "Weights only load failed" in text:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        what = f" (e.g. {found.group(1)})" if found else ""
        return (f"it holds pickled Python objects{what} besides tensors, and lit_transfer never unpickles objects; "
                "save only the tensors: a .safetensors file, or a .pth/.ckpt of a state_dict")
    if "zip archive" in text or "PytorchStreamReader" in text:
        return "it is corrupt or truncated (not a complete PyTorch zip archive); copy or save it again"
    if isinstance(err, EOFError):
        return "it is empty or truncated; copy or save it again"
    return (f"it is not a PyTorch weights file ({type(err).__name__} reading it); expected .safetensors, or "
            ".pth/.ckpt written by torch.save")


def backbone_state_dict(state: Mapping[str, torch.Tensor], classifier_names: tuple[str, ...] = ()) -> dict:
    """The backbone's own keys: wrapper prefixes stripped, classifier dropped.

    A lit_transfer checkpoint keeps only ``backbone.model.*`` (its heads and regularizer buffers are not
    part of the backbone).
    """
    if any(k.startswith(LIT_BACKBONE_PREFIX) for k in state):
        state = {k[len(LIT_BACKBONE_PREFIX) :]: v for k, v in state.items() if k.startswith(LIT_BACKBONE_PREFIX)}
    else:
        state = dict(state)
        for prefix in _WRAPPER_PREFIXES:
            if state and all(k.startswith(prefix) for k in state):
                state = {k[len(prefix) :]: v for k, v in state.items()}
    drop = tuple(f"{name}." for name in classifier_names if name)
    return {k: v for k, v in state.items() if not k.startswith(drop)}


def load_into(
    model: nn.Module, state: Mapping[str, torch.Tensor], source: str, first_conv: str | tuple[str, ...] | None
) -> None:
    """Load ``state`` into ``model`` strictly, adapting the first conv(s) to the model's input channels.

    ``first_conv`` is timm's ``pretrained_cfg["first_conv"]``: a module name, or several (e.g. RepVGG's stem).
    """
    target = model.state_dict()
    state = dict(state)
    convs = (first_conv,) if isinstance(first_conv, str) else tuple(first_conv or ())
    for key in (f"{name}.weight" for name in convs if name):
        if not (key in state and key in target and state[key].shape[1] != target[key].shape[1]):
            continue
        try:
            state[key] = adapt_input_conv(target[key].shape[1], state[key], base_chans=state[key].shape[1])
        except (NotImplementedError, ValueError, AssertionError) as err:
            raise TransferConfigError(
                f"cannot adapt {source}'s first conv '{key}' from {state[key].shape[1]} to "
                f"{target[key].shape[1]} input channels ({err}); set data channels to {state[key].shape[1]}"
            ) from err
    missing = sorted(set(target) - set(state))
    unexpected = sorted(set(state) - set(target))
    mismatched = sorted(k for k in set(state) & set(target) if state[k].shape != target[k].shape)
    if missing or unexpected or mismatched:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected)):
            if keys:
                parts.append(f"{len(keys)} {label} ({', '.join(keys[:4])}{', ...' if len(keys) > 4 else ''})")
        if mismatched:
            shown = ", ".join(f"{k} {tuple(state[k].shape)}≠{tuple(target[k].shape)}" for k in mismatched[:3])
            parts.append(f"{len(mismatched)} with other shapes ({shown})")
        raise TransferConfigError(
            f"weights in {source} do not fit backbone: {'; '.join(parts)}; "
            "use weights saved from the same architecture (model.backbone)"
        )
    model.load_state_dict(state, strict=True)


def hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    """Whether the hub answers within ``timeout`` seconds; offline mode counts as unreachable."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False
