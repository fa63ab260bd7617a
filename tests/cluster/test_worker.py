"""AgentWorker against in-process level cores: the runtime's protocol without Ray."""

import torch

from agents.agent import Agent
from agents.config import ModelConfig, WorkloadConfig
from agents.topology import agent_specs
from cluster.config import RuntimeConfig, ServerConfig
from cluster.level.core import LevelCore
from cluster.level.protocol import RejectCode
from cluster.level.records import audit
from cluster.topology import Topology
from cluster.worker import AgentWorker
from layers import LevelsConfig
from layers.dynamics import DynamicsConfig
from layers.dynamics.config import SyncConfig

WORKLOAD = WorkloadConfig(kind="synthetic", topology={"toy": {"red": ["a1", "a2"]}}, steps_per_context=12,
                          batch_size=4, seq_len=64, eval_windows=8)
MODEL = ModelConfig(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128)
LEVELS = LevelsConfig(rank=8)
DYN = DynamicsConfig(sync=SyncConfig(max_interval=3))  # push at least every 3 steps
RUNTIME = RuntimeConfig(pull_every=2, propose_every=10, eval_every=10, checkpoint_every=5)


def servers(store=None):
    topo = Topology(WORKLOAD, LEVELS.names[2:])
    agent = Agent(agent_specs(WORKLOAD)[0], model=MODEL, levels=LEVELS, workload=WORKLOAD)
    shapes = {n: tuple(m.B["swarm"].shape) for n, m in agent.stack.modules.items()}
    return {s.name: LevelCore(s.name, shapes, server=ServerConfig(window=2), dynamics=DYN, parent=s.parent,
                              children=s.children, store_dir=None if store is None else store / s.name,
                              config_hash="h")
            for s in topo.servers}, topo


def worker(name, by_name, topo, store=None):
    spec = next(s for s in agent_specs(WORKLOAD) if s.name == name)
    agent = Agent(spec, model=MODEL, levels=LEVELS, workload=WORKLOAD, dynamics=DYN)
    routes = {lvl: by_name[n] for lvl, n in topo.route(spec.id).items()}
    return AgentWorker(agent, routes, RUNTIME, store_dir=None if store is None else store / spec.id,
                       config_hash="h")


def test_workers_push_to_their_team_server_and_run_with_what_they_pull():
    by_name, topo = servers()
    a, b = worker("a1", by_name, topo), worker("a2", by_name, topo)
    for _ in range(4):
        a.run(3)
        b.run(3)
    team = by_name["swarm/red"]
    counters = team.status().counters
    assert counters.accepted == a.counters["pushes"] + b.counters["pushes"] >= 8
    assert counters.merges >= 4 and team.version > 0
    a.pull()
    assert a.versions["swarm"] == team.version
    for n, m in a.agent.stack.modules.items():  # the agent runs with exactly the server's level
        assert torch.equal(m.B["swarm"].detach(), team.B[n])
    rec = a.run(1)
    assert rec["comm_s"] > 0 and rec["compute_s"] > rec["comm_s"] and rec["bytes_sent"] > 0


def test_a_stale_push_is_refused_and_the_worker_catches_up():
    by_name, topo = servers()
    a = worker("a1", by_name, topo)
    team = by_name["swarm/red"]
    zero = {m: torch.zeros(s) for m, s in team.shapes.items()}
    for _ in range(team.cfg.max_staleness + 1):  # many versions since a1's last pull
        assert team.absorb(zero, "test").accepted
    while a.agent.take_push() is None:
        a.agent.step()
    a.agent.step()  # one step past the push taken above: the next push covers it
    a.agent.push_ready = "coherent"
    out = a.push()
    assert out.code is RejectCode.STALE and a.counters["stale"] == 1
    assert a.versions["swarm"] == team.version  # pulled right away


def test_a_restarted_worker_resumes_from_its_checkpoint_above_the_servers_seq(tmp_path):
    by_name, topo = servers()
    a = worker("a1", by_name, topo, store=tmp_path)
    a.run(7)  # checkpoint at step 5; steps 6-7 (and their pushes) happen after it
    seq_at_crash = by_name["swarm/red"].seen(a.id)
    again = worker("a1", by_name, topo, store=tmp_path)
    assert again.agent.steps == 5 and again.resumed_from == 5
    assert again.agent.seq >= seq_at_crash  # its next push is not mistaken for a duplicate
    again.run(4)
    assert RejectCode.DUPLICATE.value not in by_name["swarm/red"].status().counters.rejected


def test_a_worker_restored_behind_its_server_never_pushes_the_steps_it_holds(tmp_path):
    by_name, topo = servers(store=tmp_path / "levels")
    team = by_name["swarm/red"]
    a = worker("a1", by_name, topo, store=tmp_path)
    a.run(9)  # checkpoint at step 5; pushes up to step 9 (at least every 3 steps) reach the server after it
    held = team.covered(a.id)
    assert held.last > 5 and held.steps == held.last == a.agent.pushed_through  # every step once, 1..last
    again = worker("a1", by_name, topo, store=tmp_path)  # the crash: back to step 5, behind the server
    assert again.agent.steps == 5 and again.covered_through == held.last
    assert again.counters["pushes"] == held.pushes  # the pushes of its previous life are its own
    again.run(10)
    after = team.covered(a.id)
    assert again.counters["skipped_steps"] >= held.last - 5  # relearned locally, never pushed again
    assert after.steps == after.last == again.agent.pushed_through > held.last  # still 1..last, once each
    assert after.pushes == again.counters["pushes"] and after.steps == again.counters["pushed_steps"]
    assert team.status().counters.accepted == after.pushes
    assert team.status().counters.rejected == {}  # nothing refused: no duplicate seq, no overlap
    team.checkpoint()
    proof = audit(tmp_path / "levels" / "swarm/red", "h")
    assert proof.violations == [] and proof.coverage[a.id] == after
