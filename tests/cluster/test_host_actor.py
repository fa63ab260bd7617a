"""AgentHostActor: K agents in one Ray actor end where the same K agents in an in-process AgentHost end."""

import os
import subprocess
import sys

import ray
import torch

from agents.model import shared_base
from cluster.actors import level_server
from cluster.build import level_shapes, level_specs
from cluster.config import ServerConfig
from cluster.host import AgentHost
from cluster.host_actor import HostedAgent, agent_host, host_count, host_groups, host_name, host_share
from cluster.topology import Topology
from layers.merge import MergeConfig
from tests.cluster.test_host import CIRCUITS, DYN, LEVELS, MODEL, RUNTIME, WORKLOAD, relative, swarm

STEPS = 12


def test_lower_priority_only_lowers():
    """In a child process (niceness cannot be raised back here): to 3, then a request for 1 keeps 3."""
    start = os.nice(0)
    out = subprocess.run([sys.executable, "-c", "from cluster.actors import lower_priority as f; print(f(3), f(1))"],
                         capture_output=True, text=True, check=True, cwd=os.path.dirname(os.path.dirname(
                             os.path.dirname(os.path.abspath(__file__)))))
    assert out.stdout.split() == [str(max(start, 3))] * 2


def test_host_placement_splits_agents_and_cpus():
    ids = [f"a{i}" for i in range(10)]
    assert host_groups(ids, 3) == [ids[:4], ids[4:7], ids[7:]]
    assert host_groups(ids[:2], 5) == [["a0"], ["a1"]]
    assert host_count(64, None, nodes=1, gpus=0, cuda=False) == 1  # auto: one per node
    assert host_count(64, None, nodes=3, gpus=2, cuda=True) == 2  # auto on CUDA: one per GPU
    assert host_count(64, 16, nodes=1, gpus=0, cuda=False) == 4 and host_count(5, 1, 1, 0, False) == 5
    assert host_share([2.0], 1) == 2.0 and host_share([2.0], 2) == 1.0 and host_share([4.0, 1.0], 2) == 2.0
    assert host_name(0, ids[:4]) != host_name(0, ids[:5])


def test_a_host_actor_gives_the_levels_of_the_in_process_host(ray_session, tmp_path):
    namespace = "swarm-tests-host"
    topo = Topology(WORKLOAD, LEVELS.names[2:])
    specs = level_specs(topo, server=ServerConfig(window=2), merge=MergeConfig(), dynamics=DYN, circuits=CIRCUITS,
                        stores=lambda name: tmp_path / "levels" / name, config_hash="h")
    servers = {s.name: level_server(s, namespace=namespace, shapes=level_shapes(MODEL, LEVELS)) for s in specs}
    ids = [a.id for a in topo.agents]
    configs = {"model": MODEL, "levels": LEVELS, "workload": WORKLOAD, "dynamics": DYN, "circuits": CIRCUITS}
    name = host_name(0, ids)
    host = agent_host(name, topo.agents, namespace=namespace, num_cpus=0.5, configs=configs,
                      routes={a: topo.route(a) for a in ids}, stores={a: str(tmp_path / "agents" / a) for a in ids},
                      config_hash="h", runtime=RUNTIME)
    try:
        assert ray.get(host.agents.remote()) == ids
        # run.agent_nice: the host computes at a lower CPU priority than the servers and the service
        nice, now = ray.get(host.__ray_call__.remote(lambda self: (self.nice, os.nice(0))))
        assert nice == now >= RUNTIME.agent_nice > 0
        local = AgentHost(shared_base(MODEL, LEVELS))
        workers, local_servers = swarm(local.base)
        for w in workers.values():
            local.add(w)
        for _ in range(STEPS):
            local.step()
        recs = ray.get(host.run.remote(STEPS - 2))  # two chunks: the host's batched rounds
        recs.update(ray.get(host.run.remote(5, STEPS)))  # an agent at step `until` sits out
        assert {a: r["step"] for a, r in recs.items()} == dict.fromkeys(ids, STEPS)
        for aid, w in workers.items():
            view = HostedAgent(host, aid)  # an agent of the host, addressed like an agent actor
            rec = ray.get(view.status.remote())
            assert rec["host"] == name and rec["agent"] == aid
            assert {k: rec[k] for k in w.counters} == w.counters  # same pushes, pulls, proposals, promotions
            theirs = ray.get(view.level_state.remote())
            for lvl in w.agent.stack.levels:
                mine = w.agent.stack.level_state(lvl)
                for m in mine:
                    assert relative(theirs[lvl][m], mine[m]) < 1e-5, (aid, lvl, m)
        assert sum(w.counters["pushes"] for w in workers.values()) >= 3 * len(ids)
        for sname, s in local_servers.items():  # the same pushes reached every server, merged the same
            remote = ray.get(servers[sname].pull.remote(-1))
            assert remote["version"] == s.core.version, sname
            for m, t in s.core.B.items():
                assert relative(remote["tensors"][m], t) < 1e-5, (sname, m)
        # one agent's answers and evaluations use only its levels: a view of another agent differs
        a, b = ids[0], ids[-1]
        assert ray.get(HostedAgent(host, a).evaluate.remote(None)) == workers[a].agent.evaluate()
        assert ray.get(HostedAgent(host, b).evaluate.remote(None)) == workers[b].agent.evaluate()
        out = ray.get(HostedAgent(host, a).respond.remote(b"x = ", 4))
        with torch.no_grad():
            assert out["answer"] == workers[a].respond(b"x = ", 4)["answer"]
    finally:
        ray.kill(host, no_restart=True)
        for s in servers.values():
            ray.kill(s, no_restart=True)
