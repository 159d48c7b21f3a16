"""Hydra configuration: composition from the packaged configs, and validation that teaches."""

from flowerclf.config.compose import (
    CONFIG_GROUPS,
    ConfigError,
    compose_config,
    group_options,
)

__all__ = ["CONFIG_GROUPS", "ConfigError", "compose_config", "group_options"]
