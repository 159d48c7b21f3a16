"""Compose the packaged Hydra configs with command-line overrides, failing fast and clearly.

Configs live in the ``flowerclf.conf`` package and are found through importlib.resources by
Hydra's ``initialize_config_module``, so they work from a wheel as well as from a checkout.
Hydra's own errors are correct but terse; every override is checked here first so that a
typo gets "did you mean" and the list of what is valid. Hydra is only the composition front
end: what comes out is the typed, frozen :class:`~flowerclf.config.schema.FlowerclfConfig`.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from flowerclf.config.schema import FlowerclfConfig, validate_config
from flowerclf.core.errors import ConfigError

CONFIG_MODULE = "flowerclf.conf"
CONFIG_GROUPS = ("data", "model", "augment", "trainer", "loss", "logger", "experiment")


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
                f"Valid keys in {where}: {', '.join(sorted(keys))}"
            )
        node = node[part]
        walked.append(part)


def compose_config(
    overrides: Sequence[str] = (), config_file: str | None = None
) -> FlowerclfConfig:
    """Compose ``config.yaml`` with Hydra ``overrides``; return it validated and typed.

    With ``config_file`` (``FILE`` or ``FILE:SECTION``, e.g. the DVC pipeline's
    ``params.yaml:tf_flowers``) the base is that already-composed config instead; see
    :func:`load_config_file`.

    Raises:
        ConfigError: unparsable override, unknown group option or key, or invalid value.
    """
    if config_file:
        return load_config_file(config_file, overrides)
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

    return validate_config(_compose(list(overrides)))


def load_config_file(spec: str, overrides: Sequence[str] = ()) -> FlowerclfConfig:
    """A composed config saved as YAML (``FILE`` or ``FILE:SECTION``), plus ``key=value``.

    This is how the DVC pipeline runs its stages from ``params.yaml``, which
    ``flowerclf config params`` generates from the packaged Hydra configs: the file already
    holds every value, so only ``key=value`` overrides make sense on top of it (group choices
    such as ``model=resnet50`` need composition: regenerate the file instead). The result
    is validated exactly like :func:`compose_config`.

    Raises:
        ConfigError: missing file or section, group override, unknown key, invalid value.
    """
    path_text, _, section = spec.partition(":")
    path = Path(path_text)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    loaded = OmegaConf.load(path)
    node = OmegaConf.select(loaded, section) if section else loaded
    if not isinstance(node, DictConfig):
        sections = [str(k) for k in loaded] if isinstance(loaded, DictConfig) else []
        raise ConfigError(
            f"{path} has no config section {section!r}.{_did_you_mean(section, sections)} "
            f"Sections: {', '.join(sections)}"
        )
    cfg = OmegaConf.create(OmegaConf.to_container(node, resolve=True))
    assert isinstance(cfg, DictConfig)
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as exc:
        raise ConfigError(f"cannot parse overrides {list(overrides)}: {exc}") from None
    for override in parsed:
        key = override.key_or_group
        if key in CONFIG_GROUPS and not override.is_add():
            raise ConfigError(
                f"{override.input_line}: a config group choice cannot be applied to the "
                f"already-composed config in {spec}; set single keys ({key}.<key>=...) or "
                f"regenerate the file with `flowerclf config params`"
            )
        if override.is_delete():
            raise ConfigError(f"{override.input_line}: deleting keys is not supported here")
        if not override.is_add() and not override.is_force_add():
            _check_key_exists(cfg, key)
        OmegaConf.update(cfg, key, override.value(), merge=True, force_add=True)
    return validate_config(cfg)


def packaged_defaults() -> FlowerclfConfig:
    """The config with no overrides: every default, as the packaged Hydra configs set it."""
    return validate_config(_compose([]))
