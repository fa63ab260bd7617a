"""Circuits and upward migration: extraction, tracking, promotion, consensus across agents."""

from layers.lazy import lazy_exports

_EXPORTS = {  # public name -> the module that defines it
    "GOLDEN": "layers.circuits.config",
    "CircuitsConfig": "layers.circuits.config",
    "ConsensusCircuit": "layers.circuits.consensus",
    "ConsensusResult": "layers.circuits.consensus",
    "Proposal": "layers.circuits.consensus",
    "ModuleTest": "layers.circuits.consensus",
    "Removal": "layers.circuits.consensus",
    "consensus": "layers.circuits.consensus",
    "proposals_from": "layers.circuits.consensus",
    "remove_projection": "layers.circuits.consensus",
    "Component": "layers.circuits.extract",
    "extract": "layers.circuits.extract",
    "strength_along": "layers.circuits.extract",
    "JointTest": "layers.circuits.joint",
    "joint_test": "layers.circuits.joint",
    "Promoter": "layers.circuits.promote",
    "PromotionEvent": "layers.circuits.promote",
    "TokenBucket": "layers.circuits.promote",
    "promote": "layers.circuits.promote",
    "Circuit": "layers.circuits.tracker",
    "CircuitTracker": "layers.circuits.tracker",
    "stability_score": "layers.circuits.tracker",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = sorted(_EXPORTS)
