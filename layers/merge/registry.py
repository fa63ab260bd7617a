"""Aggregators by name: the table the config, the experiments and the benchmarks build from."""

from __future__ import annotations

from layers.merge.base import Aggregator
from layers.merge.baselines import (
    AndMask,
    CenteredClipping,
    CoordinateMedian,
    Krum,
    MeanAggregator,
    MultiKrum,
    SignMajority,
    Ties,
    TrimmedMean,
)
from layers.merge.config import MergeConfig
from layers.merge.resonance import ResonanceAggregator

AGGREGATORS: dict[str, type[Aggregator]] = {
    cls.name: cls
    for cls in (ResonanceAggregator, MeanAggregator, CoordinateMedian, TrimmedMean, Krum, MultiKrum,
                CenteredClipping, SignMajority, AndMask, Ties)
}


def make_aggregator(name: str, **kwargs) -> Aggregator:
    """Build an aggregator by name (``AGGREGATORS``); kwargs go to its constructor."""
    if name not in AGGREGATORS:
        raise ValueError(f"unknown aggregator {name!r}; known: {sorted(AGGREGATORS)}")
    return AGGREGATORS[name](**kwargs)


def build_aggregator(cfg: MergeConfig) -> Aggregator:
    """The configured aggregator, fresh (no state)."""
    kwargs = {
        "resonance": {"config": cfg.resonance},
        "mean": {"server_lr": cfg.server_lr},
        "trimmed_mean": {"f": cfg.byzantine_f},
        "krum": {"f": cfg.byzantine_f},
        "multi_krum": {"f": cfg.byzantine_f},
        "centered_clipping": {"iterations": cfg.clip_iterations},
        "and_mask": {"tau": cfg.and_mask_tau},
        "ties": {"density": cfg.ties_density},
    }.get(cfg.aggregator, {})
    return AGGREGATORS[cfg.aggregator](**kwargs)
