"""Ray runtime (agent actors, level servers, topology) and its durable state.

:mod:`cluster.config` (the ``server`` and ``run`` sections; no torch),
:mod:`cluster.wire` (tensors as msgpack header + raw bytes, no pickle),
:mod:`cluster.store` (atomic checkpoints + fsynced journal, recovery),
:mod:`cluster.state` (nested state <-> flat tensors + JSON),
:mod:`cluster.level` (a shared level without Ray: protocol, admission, records, core,
status, forwarding to the level above), :mod:`cluster.topology` (which servers exist,
who talks to whom), :mod:`cluster.build` (how each server of a topology is built, and
the tensor shapes), :mod:`cluster.worker` (an agent wired to its servers) and
:mod:`cluster.actors` (the Ray actors).
Imports may only go swarm -> cluster -> agents -> layers.
"""
