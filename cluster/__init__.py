"""Ray runtime (agent actors, level servers, topology) and its durable state.

In place: :mod:`cluster.wire` (tensors as msgpack header + raw bytes, no pickle),
:mod:`cluster.store` (atomic checkpoints + fsynced journal, recovery),
:mod:`cluster.server` (a shared level's core: validated pushes, merges, pulls,
consensus, restart by replay) and :mod:`cluster.actors` (the server as a named,
self-restoring Ray actor). Agent actors and the run loop come with the runtime.
Imports may only go swarm -> cluster -> agents -> layers.
"""
