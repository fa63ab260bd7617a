"""Ray runtime (agent actors, level servers, topology) and its durable state.

:mod:`cluster.wire` (tensors as msgpack header + raw bytes, no pickle),
:mod:`cluster.store` (atomic checkpoints + fsynced journal, recovery),
:mod:`cluster.state` (nested state <-> flat tensors + JSON),
:mod:`cluster.server` (a shared level's core: validated pushes, merges, pulls,
consensus, restart by replay), :mod:`cluster.uplink` (forwarding to the level above),
:mod:`cluster.worker` (an agent wired to its servers), :mod:`cluster.topology` (which
servers exist, who talks to whom) and :mod:`cluster.actors` (the Ray actors).
Imports may only go swarm -> cluster -> agents -> layers.
"""
