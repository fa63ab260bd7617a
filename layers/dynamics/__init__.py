"""How a level moves: the update rule with its modulators, event-driven sync, homeostasis."""

from layers.lazy import lazy_exports

_EXPORTS = {  # public name -> the module that defines it
    "ConsolidationConfig": "layers.dynamics.config",
    "DynamicsConfig": "layers.dynamics.config",
    "HomeostasisConfig": "layers.dynamics.config",
    "MassConfig": "layers.dynamics.config",
    "PhaseConfig": "layers.dynamics.config",
    "SyncConfig": "layers.dynamics.config",
    "TemperatureConfig": "layers.dynamics.config",
    "ViscosityConfig": "layers.dynamics.config",
    "Homeostasis": "layers.dynamics.homeostasis",
    "spectral_entropy": "layers.dynamics.homeostasis",
    "LevelOptimizer": "layers.dynamics.optimizer",
    "SyncGate": "layers.dynamics.sync",
    "drift_pvalue": "layers.dynamics.sync",
    "drift_statistic": "layers.dynamics.sync",
    "null_tail": "layers.dynamics.sync",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = sorted(_EXPORTS)
