"""Circuits and upward migration: extraction, tracking, promotion, consensus across agents."""

from layers.circuits.config import GOLDEN, CircuitsConfig
from layers.circuits.consensus import (
           ConsensusCircuit,
           ConsensusResult,
           Proposal,
           Removal,
           consensus,
           proposals_from,
           remove_projection,
)
from layers.circuits.extract import Component, extract, strength_along
from layers.circuits.promote import Promoter, PromotionEvent, TokenBucket, promote
from layers.circuits.tracker import Circuit, CircuitTracker, stability_score

__all__ = ["GOLDEN", "Circuit", "CircuitTracker", "CircuitsConfig", "Component", "ConsensusCircuit",
           "ConsensusResult", "Promoter", "PromotionEvent", "Proposal", "Removal", "TokenBucket", "consensus",
           "extract", "promote", "proposals_from", "remove_projection", "stability_score", "strength_along"]
