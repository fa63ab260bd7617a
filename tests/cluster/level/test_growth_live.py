"""Growth of the read space on a live swarm: level server actors (Ray), agents pulling through them."""

import time

import ray
import torch

from agents.agent import Agent
from agents.topology import agent_specs
from cluster.actors import RemoteLevel, level_server
from cluster.build import level_specs
from cluster.config import ServerConfig
from cluster.level.growth import send_growth
from cluster.topology import Topology
from cluster.worker import AgentWorker
from layers.circuits import CircuitsConfig
from layers.merge import MergeConfig
from layers.projection import ReadGrowth
from tests.cluster.level.test_growth import DYN, LEVELS, MODEL, RUNTIME, WORKLOAD, logits

NAMESPACE = "swarm-tests"


def restarted(handle, before_pid):
    deadline = time.time() + 60
    while True:  # ray.kill is asynchronous: wait until a new process answers
        try:
            status = ray.get(handle.status.remote(), timeout=30)
            if status["pid"] != before_pid:
                return status
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
            pass
        assert time.time() < deadline, "the server actor did not come back"
        time.sleep(0.2)


def test_growth_on_a_live_swarm_is_exact_agreed_and_replayed_after_a_kill(ray_session, tmp_path):
    topo = Topology(WORKLOAD, LEVELS.names[2:])
    first = Agent(agent_specs(WORKLOAD)[0], model=MODEL, levels=LEVELS, workload=WORKLOAD, dynamics=DYN)
    shapes = {n: tuple(m.B["swarm"].shape) for n, m in first.stack.modules.items()}
    specs = level_specs(topo, server=ServerConfig(window=2, checkpoint_every=2), merge=MergeConfig(), dynamics=DYN,
                        circuits=CircuitsConfig(), stores=lambda n: tmp_path / n.replace("/", "_"),
                        config_hash="live-growth")
    handles = {s.name: level_server(s, namespace=NAMESPACE, shapes=shapes) for s in specs}
    clients = {n: RemoteLevel(h) for n, h in handles.items()}
    try:
        workers = []
        for spec in agent_specs(WORKLOAD):
            agent = first if spec.id == first.spec.id else Agent(spec, model=MODEL, levels=LEVELS, workload=WORKLOAD,
                                                                 dynamics=DYN)
            workers.append(AgentWorker(agent, {lvl: clients[n] for lvl, n in topo.route(spec.id).items()}, RUNTIME))
        a, b = workers
        for _ in range(2):
            a.run(2)
            b.run(2)
        a.pull()
        before = logits(a)
        top = next(s.name for s in specs if s.parent is None)
        send_growth(clients[top], ReadGrowth(LEVELS.rank, LEVELS.rank + 4, source="test"))
        a.pull()  # learns it from the top level, hands it to the others
        # the moment of growth: the same function (new columns of every B are zero)
        assert torch.allclose(logits(a), before, rtol=0, atol=1e-6)
        statuses = {n: ray.get(h.status.remote()) for n, h in handles.items()}
        assert all(s["rank"] == LEVELS.rank + 4 for s in statuses.values()), statuses
        assert all(any(e["kind"] == "growth" for e in ray.get(h.events.remote(0))) for h in handles.values())
        b.pull()
        assert a.agent.stack.projection_digest() == b.agent.stack.projection_digest()
        for _ in range(2):
            a.run(2)
            b.run(2)
        # kill the top level's server: Ray restarts it and it replays its growth from its store
        pid = statuses[top]["pid"]
        ray.kill(handles[top], no_restart=False)
        after = restarted(handles[top], pid)
        assert after["rank"] == LEVELS.rank + 4 and after["version"] >= statuses[top]["version"]
        reply = clients[top].pull(-1)
        assert [e.to_rank for e in reply["growths"]] == [LEVELS.rank + 4]
        # a new agent joining after the restart builds the same P from what it pulls
        fresh = AgentWorker(Agent(agent_specs(WORKLOAD)[0], model=MODEL, levels=LEVELS, workload=WORKLOAD,
                                  dynamics=DYN), {lvl: clients[n] for lvl, n in topo.route(first.spec.id).items()},
                            RUNTIME)
        assert fresh.agent.stack.rank == LEVELS.rank + 4
        assert fresh.agent.stack.projection_digest() == a.agent.stack.projection_digest()
        for n, m in fresh.agent.stack.modules.items():
            assert torch.equal(m.P, a.agent.stack.modules[n].P)
        fresh.run(2)
    finally:
        for h in handles.values():
            ray.kill(h, no_restart=True)
