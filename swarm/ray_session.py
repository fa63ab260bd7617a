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


def join_ray(namespace: str | None = None, address: str | None = None) -> None:
    """Join the cluster at ``address``, else ``RAY_ADDRESS``, else this machine's latest local one
    (``ConnectionError`` when there is none). Pass a run's address (:func:`run_ray_address`) whenever
    there is a run: with two clusters on one machine (two runs, or a test session's Ray beside a run's)
    "the latest" is a guess that Ray makes from ``ray start``'s file only, never from ``ray.init``."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(address=address or os.environ.get("RAY_ADDRESS") or "auto", namespace=namespace, log_to_driver=False,
             logging_level="WARNING")


def run_ray_address(run) -> str | None:
    """The GCS address of the Ray a live run's actors are in, as its driver recorded it in ``status.json``
    (``run``: a :class:`swarm.rundir.RunDir`); None before the driver recorded it."""
    try:
        return run.read_status().get("ray_address") or None
    except (FileNotFoundError, ValueError):
        return None
