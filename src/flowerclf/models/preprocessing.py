"""Preprocessing derived from the model: timm's pretrained config, with config overrides.

The result is a :class:`~flowerclf.core.preprocess.PreprocessSpec`, which every exported
package carries; only training and export need timm to derive it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import timm

from flowerclf.config.schema import ModelConfig
from flowerclf.core.errors import ConfigError
from flowerclf.core.preprocess import IMAGENET_MEAN, IMAGENET_STD, PreprocessSpec
from flowerclf.models.backbones import ENSEMBLE_SEPARATOR, ensemble_members


def resolve_spec(arch: str, overrides: Mapping[str, Any] | None = None) -> PreprocessSpec:
    """Build the spec for timm model ``arch``; non-null ``overrides`` win.

    Architectures timm does not know (``simple_cnn``) must give every field in overrides.
    """
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    if ENSEMBLE_SEPARATOR in arch:
        return _ensemble_spec(arch, overrides)
    base: dict[str, Any] = {}
    try:
        pretrained_cfg = timm.get_pretrained_cfg(arch)
    except RuntimeError:
        pretrained_cfg = None
    if pretrained_cfg is not None:
        cfg = pretrained_cfg.to_dict()
        base = {
            "input_size": int(cfg["input_size"][-1]),
            "mean": cfg.get("mean", IMAGENET_MEAN),
            "std": cfg.get("std", IMAGENET_STD),
            "interpolation": cfg.get("interpolation", "bicubic") or "bicubic",
            "crop_pct": cfg.get("crop_pct", 0.875) or 0.875,
        }
    merged = {**base, **overrides}
    missing = [k for k in ("input_size", "mean", "std") if k not in merged]
    if missing:
        raise ConfigError(
            f"no timm pretrained config for {arch!r}; set model.preprocess.{missing[0]} "
            f"(and {', '.join(missing[1:]) or 'nothing else'}) in the model config"
        )
    return PreprocessSpec.from_dict(merged)


def _ensemble_spec(arch: str, overrides: Mapping[str, Any]) -> PreprocessSpec:
    """An ensemble is fed its largest member's input (smaller members resize inside the
    graph), so it takes that member's spec; the members must agree on normalisation."""
    specs = [resolve_spec(name) for name in ensemble_members(arch)]
    if len({(tuple(s.mean), tuple(s.std)) for s in specs}) > 1:
        raise ConfigError(f"ensemble members of {arch!r} normalise their inputs differently")
    largest = max(specs, key=lambda spec: spec.input_size)
    return PreprocessSpec.from_dict({**largest.to_dict(), **overrides})


def spec_from_model_config(model: ModelConfig) -> PreprocessSpec:
    """Resolve the spec for the typed ``model`` section (``arch`` + ``preprocess`` overrides)."""
    return resolve_spec(model.arch, model.preprocess.to_dict())
