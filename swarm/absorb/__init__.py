"""``swarm absorb``: outside PEFT adapters poured into a run's shared level, guarded
(:mod:`swarm.absorb.command`; the math is in :mod:`layers.absorb`)."""
