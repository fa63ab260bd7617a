"""Side commands: :mod:`swarm.tools.pretrain` (the cached pre-trained base), :mod:`swarm.tools.demo`
(the single-process level stack), :mod:`swarm.tools.onebox` (a multi-node Ray cluster on one machine)."""
