"""Hydra configuration: composition from the packaged configs, and validation that teaches."""

from flowerclf.config.compose import CONFIG_GROUPS, compose_config, group_options
from flowerclf.core.errors import ConfigError

__all__ = ["CONFIG_GROUPS", "ConfigError", "compose_config", "group_options"]
