"""``swarm run``: :mod:`swarm.run.driver` (actors and the driver loop), :mod:`swarm.run.display`
(live tables from the status snapshot), :mod:`swarm.run.summary` (the end-of-run evaluation)."""
