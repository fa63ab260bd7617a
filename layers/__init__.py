"""Pure torch math of the level stack: no Ray, no gRPC.

Public names: :class:`LevelStack`, :class:`LevelsConfig`, :class:`LevelLinear`,
:class:`ImportReport`, :func:`read_projection`, :func:`select_targets`.
"""

from layers.config import DEFAULT_LEVELS, LevelsConfig
from layers.level_linear import LevelLinear
from layers.peft_io import ImportReport
from layers.projection import read_projection
from layers.stack import LevelStack
from layers.targets import select_targets

__all__ = [
    "DEFAULT_LEVELS",
    "ImportReport",
    "LevelLinear",
    "LevelStack",
    "LevelsConfig",
    "read_projection",
    "select_targets",
]
