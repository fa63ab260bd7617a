"""``swarm checkpoint show|verify|fork``: inspect, check and branch the stores of a run directory
(docs/checkpoints.md). :mod:`.stores` finds and describes them, :mod:`.fork` starts a new run
directory from chosen checkpoints, :mod:`.command` is the command line."""
