"""Configuration: the schema (:mod:`swarm.config.schema`, one section per package) and loading
(:mod:`swarm.config.load`: YAML groups under ``configs/``, dot-list overrides, the config hash)."""

from swarm.config.load import ConfigError, compose, config_dir, config_hash, load_config, to_yaml
from swarm.config.schema import DemoConfig, SwarmConfig, check_growth

__all__ = ["ConfigError", "DemoConfig", "SwarmConfig", "check_growth", "compose", "config_dir", "config_hash",
           "load_config", "to_yaml"]
