"""Pure torch math of the level stack: no Ray, no gRPC.

Public names: :class:`LevelStack`, :class:`LevelsConfig`, :class:`LevelLinear`,
:class:`ImportReport`, :func:`read_projection`, :func:`select_targets`. They load on first use,
so ``import layers.config`` alone does not load torch.
"""

from layers.lazy import lazy_exports

_EXPORTS = {  # public name -> the module that defines it
    "DEFAULT_LEVELS": "layers.config",
    "LevelsConfig": "layers.config",
    "LevelLinear": "layers.level_linear",
    "ImportReport": "layers.peft_io",
    "read_projection": "layers.projection",
    "LevelStack": "layers.stack",
    "select_targets": "layers.targets",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = sorted(_EXPORTS)
