"""``swarm dashboard``: a live web page of a run (hierarchy, events, learning curves, circuits and what they do)."""
