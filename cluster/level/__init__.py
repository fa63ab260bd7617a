"""One shared level's server, without Ray (the actor in :mod:`cluster.actors` wraps it).

:mod:`~cluster.level.protocol` (``LevelClient``, ``PushResult``, ``RejectCode``: what clients
see), :mod:`~cluster.level.admission` (what a push, absorb or proposal must satisfy),
:mod:`~cluster.level.records` (the journal's typed records), :mod:`~cluster.level.core`
(``LevelCore``: the level, changed only by ``apply(record)``), :mod:`~cluster.level.status`
(counters and the status snapshot) and :mod:`~cluster.level.forwarding` (``Uplink`` and
``LinkedLevel``: what a level owes its parent, and its delivery).

What ``LevelCore`` does, one module per concern: :mod:`~cluster.level.merging` (the merge of a
push window), :mod:`~cluster.level.server_step` (how a merged gradient becomes a step),
:mod:`~cluster.level.promotion` (consensus rounds and what goes up to the parent),
:mod:`~cluster.level.membership` (members joining and leaving), :mod:`~cluster.level.growth`
(growth of the read space) and :mod:`~cluster.level.checkpointing` (what a checkpoint holds and
the restore from one).
"""
