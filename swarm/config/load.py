"""Loading a configuration: YAML groups under ``configs/``, dot-list overrides, into the schema.

A primary config (``configs/<name>.yaml`` or any YAML path) may start with a
``defaults`` list naming one option per group, e.g. ``- model: tiny_llama``, which
loads ``configs/model/tiny_llama.yaml`` into the ``model`` key. Then come the primary
file's own keys, then command-line overrides: ``levels.rank=32`` sets a value,
``model=tiny_gpt2`` picks another group option. Every source is merged into the
schema one at a time, so an error names the key and the file it came from.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from swarm.config.schema import SwarmConfig

DEFAULT_CONFIG = "demo"


class ConfigError(ValueError):
    """A configuration could not be loaded; the message names the source and key."""


# directories of whole primary configs (``swarm experiment experiment/ci``), not config groups
PRIMARY_DIRS = ("experiment",)


def config_dir() -> Path:
    """``$SWARM_CONFIG_DIR``, else the ``configs/`` of this checkout, else the packaged copy."""
    env = os.environ.get("SWARM_CONFIG_DIR")
    if env:
        return Path(env)
    checkout = Path(__file__).resolve().parents[2] / "configs"
    if checkout.is_dir():
        return checkout
    return Path(__file__).resolve().parents[1] / "_configs"


def groups() -> list[str]:
    """Config groups: sections of the schema that have a directory under ``configs/``."""
    root = config_dir()
    return [name for name in SwarmConfig.__dataclass_fields__
            if (root / name).is_dir() and name not in PRIMARY_DIRS]


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))


def known_configs() -> list[str]:
    """Names of the primary configs: ``configs/*.yaml`` and those of the primary directories
    (``experiment/team``, ...)."""
    root = config_dir()
    names = [p.stem for p in root.glob("*.yaml")]
    names += [f"{d}/{p.stem}" for d in PRIMARY_DIRS for p in (root / d).glob("*.yaml")]
    return sorted(names)


def resolve_path(config: str | Path | None) -> Path:
    """The YAML file of a config given by path or by name under ``configs/`` (``swarm``,
    ``experiment/ci``; a name may also carry its ``.yaml``). ``ConfigError`` naming what was looked
    for and the known names when there is none."""
    name = DEFAULT_CONFIG if config is None else str(config)
    path = Path(name)
    is_file_name = path.suffix in (".yaml", ".yml")
    if is_file_name and path.is_file():
        return path
    candidate = config_dir() / (name if is_file_name else f"{name}.yaml")
    if candidate.is_file():
        return candidate
    where = f"{path} is not a file and there is no {candidate}" if is_file_name else \
        f"neither a YAML file nor {candidate}"
    raise ConfigError(f"config {name!r} not found: {where} (available: {known_configs()})")


def _load_yaml(path: Path) -> DictConfig:
    try:
        loaded = OmegaConf.load(path)
    except FileNotFoundError as e:
        raise ConfigError(f"{path}: file not found") from e
    except (yaml.YAMLError, OmegaConfBaseException) as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(loaded).__name__}")
    return loaded


# mappings a later source replaces instead of merging into (a topology is a whole, not a patch; so is the
# agents' list of folders: `workload=files workload.files=...` must not keep the example's agents)
REPLACED_KEYS = ("workload.topology", "workload.files", "experiment.attack.topology")


def _merge(base: DictConfig, update: Any, source: str) -> DictConfig:
    for key in REPLACED_KEYS:
        node = update if isinstance(update, DictConfig) else OmegaConf.create(update)
        if OmegaConf.select(node, key, default=None) is not None:
            base = base.copy()
            OmegaConf.update(base, key, None, merge=False)
    try:
        return OmegaConf.merge(base, update)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "?"
        reason = str(getattr(e, "msg", e)).splitlines()[0]
        raise ConfigError(f"{source}: key {key!r}: {reason}") from None


def _split_overrides(overrides: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    known_groups = set(groups())
    picks: dict[str, str] = {}
    values: list[str] = []
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"command line: override {item!r} must look like key=value")
        if key in known_groups:
            picks[key] = value
        else:
            values.append(item)
    return picks, values


def _defaults(primary: DictConfig, path: Path) -> dict[str, str]:
    entries = primary.pop("defaults", None) or []
    picks: dict[str, str] = {}
    for entry in entries:
        if not isinstance(entry, DictConfig) or len(entry) != 1:
            raise ConfigError(f"{path}: key 'defaults': each entry must be one 'group: option' pair, got {entry}")
        (group, option), = entry.items()
        picks[str(group)] = str(option)
    return picks


def compose(config: str | Path | None = None, overrides: Sequence[str] = ()) -> DictConfig:
    """Schema <- group files <- primary file <- overrides, as a validated-type DictConfig."""
    path = resolve_path(config)
    primary = _load_yaml(path)
    cli_picks, values = _split_overrides(overrides)
    picks = {**_defaults(primary, path), **cli_picks}
    merged = OmegaConf.structured(SwarmConfig)
    for group, option in picks.items():
        if group not in groups():
            raise ConfigError(f"{path}: key 'defaults': {group!r} is not a config group (groups: {groups()})")
        group_file = config_dir() / group / f"{option}.yaml"
        if not group_file.is_file():
            raise ConfigError(f"config group {group!r}: {group_file} not found (options: {group_options(group)})")
        merged = _merge(merged, {group: _load_yaml(group_file)}, str(group_file))
    merged = _merge(merged, primary, str(path))
    try:
        cli = OmegaConf.from_dotlist(values)
    except OmegaConfBaseException as e:
        raise ConfigError(f"command line: {e}") from None
    return _merge(merged, cli, "command line")


def load_config(config: str | Path | None = None, overrides: Sequence[str] = ()) -> SwarmConfig:
    """Load, merge and validate a config; see the module docstring.

    Raises:
        ConfigError: missing file, bad YAML, unknown key, wrong type or invalid
            value; the message names the file (or "command line") and the key.
    """
    merged = compose(config, overrides)
    try:
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "?"
        raise ConfigError(f"{resolve_path(config)}: key {key!r}: {str(getattr(e, 'msg', e)).splitlines()[0]}") from None
    except ValueError as e:
        raise ConfigError(f"{resolve_path(config)} + overrides: {e}") from None
    _resolve_topology(cfg)
    return cfg


def _resolve_topology(cfg: SwarmConfig) -> None:
    """A files/jsonl/dataset workload without a topology gets the one its data defines, so that every
    later reader (the run's topology, the config hash, `swarm config show`) sees a concrete one."""
    from agents.config import DATA_KINDS
    from agents.sources import WorkloadError, topology_of

    if cfg.workload.topology is not None or cfg.workload.kind not in DATA_KINDS:
        return
    try:
        cfg.workload.topology = topology_of(cfg.workload)
    except WorkloadError as e:
        raise ConfigError(str(e) if str(e).startswith("workload") else f"workload: {e}") from None


def config_hash(cfg: SwarmConfig) -> str:
    """SHA-256 of everything that shapes learned state (all but ``run`` and ``demo``): a resumed run
    must match it, while its length or progress settings may change."""
    data = OmegaConf.to_container(OmegaConf.structured(cfg))
    # cache, learn: they shape learning only when agents are asked or fed; left out so runs from before them
    # still resume
    for key in ("run", "demo", "serve", "pretrain", "experiment", "absorb", "cache", "learn"):
        data.pop(key, None)
    for key in ("device", "gpus_per_agent"):  # where it runs, not what it learns: a run may resume elsewhere
        data.get("agent", {}).pop(key, None)
    for (*sections, key), before in _LATER_KEYS.items():  # at the behaviour runs had before the key existed
        node = data
        for section in sections:
            node = node.get(section, {})
        if node.get(key, before) == before:
            node.pop(key, None)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


# Keys added after runs were written, with the value that reproduces what those runs did: left out of
# the hash at that value, so older runs still resume (and their hash does not change).
_LATER_KEYS = {("server", "step"): "rms", ("levels", "max_rank"): None, ("levels", "grow_after"): 0,
               ("levels", "grow_step"): 8, ("circuits", "context_track_every"): 1,
               ("dynamics", "temperature", "measure"): "drive"}


def to_yaml(cfg: SwarmConfig) -> str:
    """The resolved config as YAML (what ``swarm config show`` prints)."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))
