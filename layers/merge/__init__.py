"""Merging K pushed updates into one: the resonance merge and the baselines it is measured against."""

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
from layers.merge.config import MergeConfig, build_aggregator
from layers.merge.resonance import ResonanceAggregator, ResonanceConfig, threshold

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


__all__ = ["AGGREGATORS", "Aggregator", "AndMask", "CenteredClipping", "CoordinateMedian", "Krum", "MergeConfig",
           "MeanAggregator", "MultiKrum", "ResonanceAggregator", "ResonanceConfig", "SignMajority", "Ties",
           "TrimmedMean", "build_aggregator", "make_aggregator", "threshold"]
