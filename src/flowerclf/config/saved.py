"""Configs that earlier runs wrote down, read back as typed objects.

A checkpoint keeps its run's config as a plain dict (hyper-parameter ``config``), and a
model package describes its network in the descriptor's ``model`` section. Files written by
older versions of flowerclf lack the keys added since; this module is the one place that
fills them, from the packaged Hydra configs (the same source every new run takes its
defaults from), and only where a key is missing: a value the run recorded always wins.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flowerclf.config.compose import packaged_defaults
from flowerclf.config.schema import (
    NO_RUN,
    ModelConfig,
    RunConfig,
    validate_as,
    validate_run_config,
)

log = logging.getLogger(__name__)


def fill_missing(saved: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """``saved`` with every key it lacks taken from ``defaults``, section by section."""
    filled = dict(saved)
    for key, default in defaults.items():
        if key not in filled:
            filled[key] = default
        elif isinstance(default, Mapping) and isinstance(filled[key], Mapping):
            filled[key] = fill_missing(filled[key], default)
    return filled


def load_run_config(saved: Mapping[str, Any]) -> RunConfig:
    """A run's recorded config (a checkpoint's ``config``, a run's ``config.yaml``), typed.

    Top-level keys this version does not know (a ``+key=value`` that older versions let
    through) are dropped with a warning; inside sections, keys were always checked.

    Raises:
        ConfigError: a recorded value this version cannot accept.
    """
    unknown = sorted(set(saved) - set(RunConfig.model_fields))
    if unknown:
        log.warning("ignoring keys this flowerclf does not know in a saved config: %s", unknown)
    known = {key: value for key, value in saved.items() if key in RunConfig.model_fields}
    defaults = {**packaged_defaults().to_dict(), "run": NO_RUN.to_dict()}
    return validate_run_config(fill_missing(known, defaults))


def load_model_section(saved: Mapping[str, Any]) -> ModelConfig:
    """A ``model`` section as a package descriptor records it (without ``preprocess``, which
    the descriptor keeps separately), typed; keys older packages lack are filled."""
    defaults = packaged_defaults().model.to_dict()
    return validate_as(ModelConfig, fill_missing(saved, defaults), prefix="model")
