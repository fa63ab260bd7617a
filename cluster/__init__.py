"""Ray runtime (agent actors, level servers, topology) and its durable state.

In place: :mod:`cluster.wire` (tensors as msgpack header + raw bytes, no pickle),
:mod:`cluster.store` (atomic checkpoints + fsynced journal, recovery) and
:mod:`cluster.server` (a shared level's core: validated pushes, merges, pulls,
consensus, restart by replay). The Ray actors that wrap them come with the runtime.
Imports may only go swarm -> cluster -> agents -> layers.
"""
