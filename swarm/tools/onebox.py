"""A multi-node Ray cluster on one machine: ``swarm cluster up|down|status [infra/onebox.yaml]``.

Each node is its own raylet started with ``ray start`` (the head with the ``swarm_head``
resource the level servers ask for), exactly what ``ray up`` runs on real machines, so
``RAY_ADDRESS=127.0.0.1:<port> swarm run`` spreads agents over several Ray nodes. All
nodes share a private ``temp_dir``; ``down`` ends only this cluster's processes, found by
that directory or port in their command line, and their children (never ``ray stop``,
which would end every Ray on the machine).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import yaml

from layers.config import check_fields


@dataclass
class OneboxConfig:
    """Attributes:
        temp_dir: Ray's root temporary directory for this cluster (keep it short: socket paths).
        port: the head's GCS port; ``RAY_ADDRESS`` is ``127.0.0.1:<port>``.
        head_cpus, head_resources: the head (hosts level servers and the query service).
        workers: CPUs of each worker node (one raylet each).
        object_store_mb: object store per node.
    """

    temp_dir: str = "/tmp/swarm-onebox"
    port: int = 6389
    head_cpus: float = 1
    head_resources: dict = field(default_factory=lambda: {"swarm_head": 1})
    workers: list = field(default_factory=lambda: [1, 1])
    object_store_mb: int = 200

    def __post_init__(self) -> None:
        check_fields("onebox", self, temp_dir=0 < len(self.temp_dir) <= 40, port=0 < self.port < 65536,
                     head_cpus=self.head_cpus >= 0, workers=all(c > 0 for c in self.workers),
                     object_store_mb=self.object_store_mb >= 80)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def load(path: str | Path) -> OneboxConfig:
    data = yaml.safe_load(Path(path).read_text()) or {}
    unknown = sorted(set(data) - set(OneboxConfig.__dataclass_fields__))
    if unknown:
        raise ValueError(f"{path}: unknown key {unknown[0]!r} (keys: {sorted(OneboxConfig.__dataclass_fields__)})")
    return OneboxConfig(**data)


def _ray(*args: str) -> list[str]:
    return [str(Path(sys.executable).with_name("ray")), *args]


def commands(cfg: OneboxConfig) -> list[list[str]]:
    """The ``ray start`` commands, head first."""
    common = [f"--object-store-memory={cfg.object_store_mb * 10**6}", "--disable-usage-stats",
              "--dashboard-agent-listen-port=0"]
    head = _ray("start", "--head", f"--port={cfg.port}", f"--num-cpus={cfg.head_cpus:g}",
                f"--resources={json.dumps(cfg.head_resources)}", f"--temp-dir={cfg.temp_dir}",
                "--include-dashboard=false", *common)
    workers = [_ray("start", f"--address={cfg.address}", f"--num-cpus={c:g}", *common) for c in cfg.workers]
    return [head, *workers]


def up(cfg: OneboxConfig, echo=print) -> str:
    """Start the nodes; returns the address. Refuses if this cluster's processes already run."""
    if processes(cfg):
        raise RuntimeError(f"a cluster with temp_dir {cfg.temp_dir} or port {cfg.port} is already running "
                           "(swarm cluster down first)")
    env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
    for cmd in commands(cfg):
        echo("$ " + " ".join(Path(cmd[0]).name if i == 0 else a for i, a in enumerate(cmd)))
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            down(cfg)
            raise RuntimeError(f"ray start failed ({done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
    return cfg.address


def processes(cfg: OneboxConfig) -> list[psutil.Process]:
    """This cluster's processes: their command line names its temp dir or head port; plus their children."""
    marks = (cfg.temp_dir.rstrip("/") + "/", f":{cfg.port}")
    found: dict[int, psutil.Process] = {}
    me = os.getpid()
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            line = " ".join(p.info["cmdline"] or [])
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if p.pid != me and "ray" in line and any(m in line for m in marks) and "swarm cluster" not in line:
            found[p.pid] = p
            try:
                found.update({c.pid: c for c in p.children(recursive=True)})
            except psutil.NoSuchProcess:
                pass
    return list(found.values())


def down(cfg: OneboxConfig, timeout: float = 15.0) -> int:
    """SIGTERM this cluster's processes, SIGKILL what is left after ``timeout``; returns how many."""
    procs = processes(cfg)
    for p in procs:
        try:
            p.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)
    return len(procs)


def wait_for_nodes(cfg: OneboxConfig, timeout: float = 60.0) -> list[dict]:
    """Block until every node is alive (from a throwaway driver); returns ray.nodes()."""
    import ray

    want = 1 + len(cfg.workers)
    deadline = time.time() + timeout
    ray.init(address=cfg.address, log_to_driver=False, logging_level="ERROR")
    try:
        while True:
            nodes = [n for n in ray.nodes() if n["Alive"]]
            if len(nodes) >= want or time.time() > deadline:
                return nodes
            time.sleep(0.5)
    finally:
        ray.shutdown()
