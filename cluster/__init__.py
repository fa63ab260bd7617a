"""Ray runtime (agent actors, level servers, topology) and its durable state.

In place: :mod:`cluster.wire` (tensors as msgpack header + raw bytes, no pickle) and
:mod:`cluster.store` (atomic checkpoints + fsynced journal, recovery). The actors come
with the runtime. Imports may only go swarm -> cluster -> agents -> layers.
"""
