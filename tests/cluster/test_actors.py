import time

import ray
import torch

from cluster.actors import level_server
from cluster.build import LevelSpec
from cluster.config import ServerConfig
from cluster.level.protocol import RejectCode
from layers.circuits import CircuitsConfig
from layers.dynamics import DynamicsConfig
from layers.merge import MergeConfig

SHAPES = {"m.q": (8, 4), "m.v": (6, 4)}


def grad(seed):
    gen = torch.Generator().manual_seed(seed)
    return {m: torch.ones(s) + 0.3 * torch.randn(s, generator=gen) for m, s in SHAPES.items()}


def test_server_actor_survives_a_kill_with_every_acknowledged_push(ray_session, tmp_path):
    spec = LevelSpec("swarm/red", "swarm", None, 1, ServerConfig(window=2, checkpoint_every=2), MergeConfig(),
                     DynamicsConfig(), CircuitsConfig(), store_dir=str(tmp_path / "red"), config_hash="h")
    server = level_server(spec, namespace="swarm-tests", shapes=SHAPES)
    acks = [ray.get(server.push.remote(f"a{i % 2}", i // 2 + 1, ray.get(server.status.remote())["version"],
                                       grad(i))) for i in range(7)]
    assert all(a.accepted for a in acks)
    before = ray.get(server.status.remote())
    assert before["version"] == 3 and before["pending"] == 1
    same = level_server(spec, namespace="swarm-tests", shapes=SHAPES)  # get_if_exists: the same actor
    assert ray.get(same.status.remote())["version"] == 3

    ray.kill(server, no_restart=False)  # Ray restarts it; the constructor recovers from the store
    deadline = time.time() + 60
    while True:  # ray.kill is asynchronous: wait until a new process answers
        try:
            after = ray.get(server.status.remote(), timeout=30)
            if after["pid"] != before["pid"]:
                break
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
            pass
        assert time.time() < deadline, "the server actor did not come back"
        time.sleep(0.2)
    assert after["version"] == before["version"] and after["pending"] == before["pending"]
    assert after["last_seq"] == before["last_seq"] and after["stats"]["accepted"] == 7
    assert ray.get(server.push.remote("a0", 5, after["version"], grad(9))).accepted
    # a retried push (same sender and seq) is recognised, never merged twice
    assert ray.get(server.push.remote("a0", 5, after["version"], grad(9))).code is RejectCode.DUPLICATE
    ray.kill(server, no_restart=True)
