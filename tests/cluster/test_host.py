"""AgentHost: K agents on one frozen base end exactly where the same K agents stepped one at a time end."""

import dataclasses

import pytest
import torch

from agents.agent import Agent
from agents.config import ModelConfig, WorkloadConfig
from agents.model import shared_base
from agents.topology import agent_specs
from cluster.build import level_shapes, level_specs, link_levels
from cluster.config import RuntimeConfig, ServerConfig
from cluster.host import AgentHost
from cluster.level.forwarding import LinkedLevel
from cluster.level.growth import send_growth
from cluster.topology import Topology
from cluster.worker import AgentWorker
from layers import LevelsConfig
from layers.circuits import CircuitsConfig
from layers.dynamics import DynamicsConfig
from layers.dynamics.config import SyncConfig
from layers.merge import MergeConfig
from layers.projection import ReadGrowth

WORKLOAD = WorkloadConfig(kind="synthetic", topology={"toy": {"red": ["a1", "a2"], "blue": ["b1"]}},
                          steps_per_context=6, batch_size=2, seq_len=32, eval_windows=2)
MODEL = ModelConfig(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128)
LEVELS = LevelsConfig(rank=8)
DYN = DynamicsConfig(sync=SyncConfig(max_interval=3))  # push at least every 3 steps
CIRCUITS = CircuitsConfig(min_age=2, score_threshold=0.5)  # promotions within a few contexts
RUNTIME = RuntimeConfig(pull_every=2, propose_every=6, eval_every=8, checkpoint_every=1000)
STEPS = 24


def swarm(base=None) -> tuple[dict[str, AgentWorker], dict[str, LinkedLevel]]:
    """Linked level servers (as the experiments build them) and one worker per agent of WORKLOAD."""
    topo = Topology(WORKLOAD, LEVELS.names[2:])
    specs = level_specs(topo, server=ServerConfig(window=2), merge=MergeConfig(), dynamics=DYN, circuits=CIRCUITS)
    servers = link_levels(specs, level_shapes(MODEL, LEVELS))
    workers = {}
    for spec in topo.agents:
        agent = Agent(spec, model=MODEL, levels=LEVELS, workload=WORKLOAD, dynamics=DYN, circuits=CIRCUITS,
                      base=base)
        workers[spec.id] = AgentWorker(agent, {lvl: servers[n] for lvl, n in topo.route(spec.id).items()}, RUNTIME)
    return workers, servers


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def test_a_host_steps_its_agents_exactly_as_they_step_one_at_a_time():
    alone, alone_servers = swarm()
    host = AgentHost(shared_base(MODEL, LEVELS))
    hosted, hosted_servers = swarm(host.base)
    for w in hosted.values():
        host.add(w)
    for _ in range(STEPS):
        for w in alone.values():  # round-robin, as the experiments step their agents
            w.run(1)
        host.step()
    for aid, w in alone.items():
        h = hosted[aid]
        assert h.agent.steps == w.agent.steps == STEPS
        assert h.counters == w.counters  # same pushes, pulls, proposals, removals, promotions
        for lvl in w.agent.stack.levels:
            mine, theirs = h.agent.stack.level_state(lvl), w.agent.stack.level_state(lvl)
            for m in theirs:
                assert relative(mine[m], theirs[m]) < 1e-5, (aid, lvl, m)
    # what happened covers the protocol: pushes, pulls, promotions (context -> agent)
    total = {k: sum(w.counters[k] for w in alone.values()) for k in ("pushes", "pulls", "promoted")}
    assert total["pushes"] >= 3 * len(alone) and total["pulls"] > 0 and total["promoted"] > 0, total
    for name, server in alone_servers.items():  # the same pushes, in the same order, reached every server
        mine, theirs = hosted_servers[name].core, server.core
        assert mine.version == theirs.version and mine.status().counters == theirs.status().counters
        for m in theirs.B:
            assert relative(mine.B[m], theirs.B[m]) < 1e-5, (name, m)


def test_a_growth_pulled_inside_a_host_grows_every_agent_and_no_push_is_refused():
    """The first hosted agent to pull a growth grows every stack on the shared base, between the host's
    backward and the other agents' use of their gradients, and before their own pushes: a live run with
    automatic growth crashed there (no gradient), and a grown agent then pushed to a team server still
    at the old rank (refused: its steps lost). Now each agent takes its gradient first, and a push hands
    its server the growths it lacks. (Not compared with agents stepped one at a time: those push at the
    old rank before their own pull brings the growth, a different but equally valid order.)"""
    host = AgentHost(shared_base(MODEL, LEVELS))
    hosted, servers = swarm(host.base)
    for w in hosted.values():
        host.add(w)
    for _ in range(5):
        host.step()
    send_growth(servers["foundation"], ReadGrowth(8, 12, source="test"))  # agents carry it down at their pulls
    for _ in range(7):
        host.step()
    assert host.base.config.rank == 12
    built = Agent(agent_specs(WORKLOAD)[0], model=MODEL, levels=dataclasses.replace(LEVELS, rank=12),
                  workload=WORKLOAD)
    for w in hosted.values():
        assert w.agent.stack.rank == 12 and w.agent.steps == 12
        assert w.agent.stack.projection_digest() == built.stack.projection_digest()
        assert w.counters["rejected"] == 0 and w.counters["pushes"] >= 3, (w.id, w.counters)
    for name, linked in servers.items():
        assert linked.core.rank == 12 and all(t.shape[1] == 12 for t in linked.core.B.values()), name


def test_a_hosted_agent_alone_is_bitwise_a_plain_agent():
    spec = agent_specs(WORKLOAD)[0]
    plain = Agent(spec, model=MODEL, levels=LEVELS, workload=WORKLOAD)
    hosted = Agent(spec, model=MODEL, levels=LEVELS, workload=WORKLOAD, base=shared_base(MODEL, LEVELS))
    for _ in range(3):
        assert plain.step()["bpb"] == hosted.step()["bpb"]
    assert plain.evaluate() == hosted.evaluate()
    for m, t in plain.stack.level_state(plain.slow).items():
        assert torch.equal(t, hosted.stack.level_state(hosted.slow)[m])


def test_agents_that_cannot_share_a_base_are_refused_by_name():
    base = shared_base(MODEL, LEVELS)
    spec = agent_specs(WORKLOAD)[0]
    with pytest.raises(ValueError, match=r"agent 'toy/red/a1': levels.rank=16 differs from the host's levels.rank=8"):
        Agent(spec, model=MODEL, levels=dataclasses.replace(LEVELS, rank=16), workload=WORKLOAD, base=base)
    with pytest.raises(ValueError, match=r"agent 'toy/red/a1': levels.target_modules=\['q_proj'\] differs"):
        Agent(spec, model=MODEL, levels=dataclasses.replace(LEVELS, target_modules=["q_proj"]), workload=WORKLOAD,
              base=base)
    with pytest.raises(ValueError, match=r"agent 'toy/red/a1': its model differs .*hidden_size: 32 != 64"):
        Agent(spec, model=dataclasses.replace(MODEL, hidden_size=32), levels=LEVELS, workload=WORKLOAD, base=base)
    # other level names on the same shared settings are fine: each agent sums its own levels
    Agent(spec, model=MODEL, levels=dataclasses.replace(LEVELS, names=["context", "agent", "swarm"]),
          workload=WORKLOAD, base=base)
    # a host refuses a worker whose agent runs on another base, and batches of different shapes
    workers, _ = swarm()
    host = AgentHost(base)
    with pytest.raises(ValueError, match="agent 'toy/blue/b1' was not made on this host's base"):
        host.add(workers["toy/blue/b1"])
    hosted, _ = swarm(base)
    for w in hosted.values():
        host.add(w)
    hosted["toy/red/a2"].agent.workload.cfg = dataclasses.replace(WORKLOAD, batch_size=3)
    with pytest.raises(ValueError, match="agent 'toy/red/a2' has a batch of shape"):
        host.step()
