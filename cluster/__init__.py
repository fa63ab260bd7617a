"""Ray runtime (agent actors, level servers, topology, checkpoints).

Empty until the runtime lands: imports may only go swarm -> cluster -> agents -> layers.
"""
