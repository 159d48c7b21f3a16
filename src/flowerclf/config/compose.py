"""Compose the packaged Hydra configs with command-line overrides, failing fast and clearly.

Configs live in the ``flowerclf.conf`` package and are found through importlib.resources by
Hydra's ``initialize_config_module``, so they work from a wheel as well as from a checkout.
Hydra's own errors are correct but terse; every override is checked here first so that a
typo gets "did you mean" and the list of what is valid.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from importlib import resources

from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

CONFIG_MODULE = "flowerclf.conf"
CONFIG_GROUPS = ("data", "model", "augment", "trainer", "loss", "logger", "experiment")


class ConfigError(ValueError):
    """A configuration value or override is invalid; the message says what is valid."""


def group_options(group: str) -> list[str]:
    """Names of the configs in ``group`` (files starting with ``_`` are private bases)."""
    folder = resources.files(CONFIG_MODULE).joinpath(group)
    if not folder.is_dir():
        return []
    return sorted(
        entry.name.removesuffix(".yaml")
        for entry in folder.iterdir()
        if entry.name.endswith(".yaml") and not entry.name.startswith("_")
    )


def _did_you_mean(word: str, candidates: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""


def _compose(overrides: Sequence[str]) -> DictConfig:
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(str(exc)) from None
    finally:
        GlobalHydra.instance().clear()


def _check_group_choice(group: str, value: object) -> None:
    options = group_options(group)
    if value is None or str(value) in options:
        return
    raise ConfigError(
        f"{group}={value} is not a known {group} config.{_did_you_mean(str(value), options)} "
        f"Valid {group} configs: {', '.join(options)}"
    )


def _check_key_exists(cfg: DictConfig, dotted: str) -> None:
    node: object = cfg
    walked: list[str] = []
    for part in dotted.split("."):
        if not isinstance(node, DictConfig):
            raise ConfigError(
                f"cannot set {dotted!r}: {'.'.join(walked)} is a value, not a section"
            )
        keys = [str(k) for k in node]
        if part not in keys:
            where = ".".join(walked) or "the top level"
            raise ConfigError(
                f"unknown config key {dotted!r}.{_did_you_mean(part, keys)} "
                f"Valid keys in {where}: {', '.join(sorted(keys))}. "
                f"(Prefix with '+' to add a new key on purpose.)"
            )
        node = node[part]
        walked.append(part)


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    """Compose ``config.yaml`` with Hydra ``overrides`` and validate the result.

    Raises:
        ConfigError: unparsable override, unknown group option or key, or invalid value.
    """
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as exc:
        raise ConfigError(f"cannot parse overrides {list(overrides)}: {exc}") from None

    group_overrides: list[str] = []
    value_overrides = []
    for override, text in zip(parsed, overrides, strict=True):
        key = override.key_or_group
        if key in CONFIG_GROUPS and not override.is_add() and not override.is_delete():
            _check_group_choice(key, override.value())
            group_overrides.append(text)
        else:
            value_overrides.append(override)

    base = _compose(group_overrides)
    for override in value_overrides:
        if override.is_add() or override.is_force_add() or override.package:
            continue
        _check_key_exists(base, override.key_or_group)

    cfg = _compose(list(overrides))
    from flowerclf.config.schema import validate_config  # pydantic import kept lazy

    validate_config(cfg)
    return cfg
