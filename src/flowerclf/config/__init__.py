"""Hydra configuration: composition from the packaged configs, validation that teaches, and
the typed, frozen config object the code reads."""

from flowerclf.config.compose import CONFIG_GROUPS, compose_config, group_options
from flowerclf.config.schema import FlowerclfConfig, RunConfig
from flowerclf.core.errors import ConfigError

__all__ = [
    "CONFIG_GROUPS",
    "ConfigError",
    "FlowerclfConfig",
    "RunConfig",
    "compose_config",
    "group_options",
]
