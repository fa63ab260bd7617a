"""Joining or starting Ray for a run, a query service or a command that talks to live actors."""

from __future__ import annotations

import os

import ray


def start_ray(namespace: str) -> bool:
    """Join ``RAY_ADDRESS`` or start a local Ray sized to this machine (the embedded default).

    Returns True when this process started Ray (and so should shut it down); False when Ray was
    already initialised here or a cluster was joined."""
    if ray.is_initialized():
        return False
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, namespace=namespace, log_to_driver=False)
        return False
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private, local cluster
    ray.init(num_cpus=os.cpu_count(), namespace=namespace, include_dashboard=False, log_to_driver=False,
             logging_level="WARNING")
    return True


def join_ray(namespace: str | None = None) -> None:
    """Join the cluster at ``RAY_ADDRESS``, else this machine's latest local one (``ConnectionError``
    when there is none)."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(address=os.environ.get("RAY_ADDRESS", "auto"), namespace=namespace, log_to_driver=False,
             logging_level="WARNING")
