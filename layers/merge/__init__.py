"""Merging K pushed updates into one: the resonance merge and the baselines it is measured against."""

from layers.lazy import lazy_exports

_EXPORTS = {  # public name -> the module that defines it
    "Aggregator": "layers.merge.base",
    "AndMask": "layers.merge.baselines",
    "CenteredClipping": "layers.merge.baselines",
    "CoordinateMedian": "layers.merge.baselines",
    "Krum": "layers.merge.baselines",
    "MeanAggregator": "layers.merge.baselines",
    "MultiKrum": "layers.merge.baselines",
    "SignMajority": "layers.merge.baselines",
    "Ties": "layers.merge.baselines",
    "TrimmedMean": "layers.merge.baselines",
    "AGGREGATOR_NAMES": "layers.merge.config",
    "MergeConfig": "layers.merge.config",
    "ResonanceConfig": "layers.merge.config",
    "build_aggregator": "layers.merge.registry",
    "AGGREGATORS": "layers.merge.registry",
    "make_aggregator": "layers.merge.registry",
    "ResonanceAggregator": "layers.merge.resonance",
    "threshold": "layers.merge.resonance",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = sorted(_EXPORTS)
