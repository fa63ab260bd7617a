"""How a level moves: the update rule with its modulators, event-driven sync, homeostasis."""

from layers.dynamics.config import (
    DynamicsConfig,
    HomeostasisConfig,
    MassConfig,
    PhaseConfig,
    SyncConfig,
    TemperatureConfig,
    ViscosityConfig,
)
from layers.dynamics.homeostasis import Homeostasis, spectral_entropy
from layers.dynamics.optimizer import LevelOptimizer
from layers.dynamics.sync import SyncGate, effective_samples

__all__ = ["DynamicsConfig", "Homeostasis", "HomeostasisConfig", "LevelOptimizer", "MassConfig", "PhaseConfig",
           "SyncConfig", "SyncGate", "TemperatureConfig", "ViscosityConfig", "effective_samples",
           "spectral_entropy"]
