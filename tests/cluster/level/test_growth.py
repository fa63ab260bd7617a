"""Growth of the read space as a journaled event: level cores, agents and restarts agree (no Ray)."""

import pytest
import torch

from agents.agent import Agent
from agents.config import ModelConfig, WorkloadConfig
from agents.topology import agent_specs
from cluster.config import RuntimeConfig, ServerConfig
from cluster.level.core import LevelCore
from cluster.level.growth import send_growth
from cluster.topology import Topology
from cluster.worker import AgentWorker
from layers import LevelsConfig
from layers.dynamics import DynamicsConfig
from layers.dynamics.config import SyncConfig, TemperatureConfig
from layers.projection import ReadGrowth, complement_rows, projection_digest

WORKLOAD = WorkloadConfig(kind="synthetic", topology={"toy": {"red": ["a1", "a2"]}}, steps_per_context=12,
                          batch_size=4, seq_len=32, eval_windows=4)
MODEL = ModelConfig(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128)
LEVELS = LevelsConfig(rank=8)
DYN = DynamicsConfig(sync=SyncConfig(max_interval=2))
RUNTIME = RuntimeConfig(pull_every=2, propose_every=100, eval_every=100, checkpoint_every=4)


def servers(store):
    topo = Topology(WORKLOAD, LEVELS.names[2:])
    agent = Agent(agent_specs(WORKLOAD)[0], model=MODEL, levels=LEVELS, workload=WORKLOAD)
    shapes = {n: tuple(m.B["swarm"].shape) for n, m in agent.stack.modules.items()}
    return {s.name: LevelCore(s.name, shapes, server=ServerConfig(window=2, checkpoint_every=3), dynamics=DYN,
                              parent=s.parent, children=s.children, store_dir=store / s.name.replace("/", "_"),
                              config_hash="h")
            for s in topo.servers}, topo


def worker(name, by_name, topo, store):
    spec = next(s for s in agent_specs(WORKLOAD) if s.name == name)
    agent = Agent(spec, model=MODEL, levels=LEVELS, workload=WORKLOAD, dynamics=DYN)
    routes = {lvl: by_name[n] for lvl, n in topo.route(spec.id).items()}
    return AgentWorker(agent, routes, RUNTIME, store_dir=store / spec.name, config_hash="h")


def logits(w):
    ids = w.agent.workload.held_out.ids[:2, :-1]
    with torch.no_grad():
        return w.agent.model(ids).logits


def test_growth_reaches_every_level_and_agent_keeps_the_function_and_survives_restarts(tmp_path):
    by_name, topo = servers(tmp_path)
    a, b = worker("a1", by_name, topo, tmp_path), worker("a2", by_name, topo, tmp_path)
    for _ in range(3):
        a.run(2)
        b.run(2)
    a.pull()
    before = logits(a)
    foundation = next(c for n, c in by_name.items() if n.startswith("foundation"))
    send_growth(foundation, ReadGrowth(8, 12, source="test"))  # enters at one level only
    a.pull()  # a learns it from the foundation and hands it to its other servers
    assert all(c.rank == 12 for c in by_name.values())
    assert torch.allclose(logits(a), before, rtol=0, atol=1e-6)  # zero columns: the same function
    b.pull()
    # every process holds the same P, and it is the P of a stack built at rank 12
    assert a.agent.stack.projection_digest() == b.agent.stack.projection_digest()
    built = Agent(agent_specs(WORKLOAD)[0], model=MODEL, levels=LevelsConfig(rank=12), workload=WORKLOAD)
    assert a.agent.stack.projection_digest() == built.stack.projection_digest()
    for _ in range(3):  # learning goes on at the new rank
        a.run(2)
        b.run(2)
    team = by_name["swarm/red"]
    assert team.status().counters.merges >= 4 and all(t.shape[1] == 12 for t in team.B.values())
    a.checkpoint()
    # restart every server and agent from their stores: the journals and checkpoints replay the growth
    again, _ = servers(tmp_path)
    for name, core in again.items():
        assert core.rank == 12 and core.version == by_name[name].version
        for m in core.B:
            assert torch.equal(core.B[m], by_name[name].B[m])
        assert [e.id for _, e in core.growths] == [e.id for _, e in by_name[name].growths]
    a2 = worker("a1", again, topo, tmp_path)
    assert a2.agent.stack.rank == 12
    assert a2.agent.stack.projection_digest() == a.agent.stack.projection_digest()
    a2.run(2)


def test_carried_rows_give_bit_identical_P_and_old_rank_pushes_are_padded(tmp_path):
    by_name, topo = servers(tmp_path)
    a, b = worker("a1", by_name, topo, tmp_path), worker("a2", by_name, topo, tmp_path)
    a.run(2)
    gen = torch.Generator().manual_seed(3)
    rows = {n: complement_rows(m.P, torch.randn(6, m.in_features, generator=gen, dtype=torch.float64), 2)
            for n, m in a.agent.stack.modules.items()}
    event = ReadGrowth(8, 10, rows, source="absorb:test")
    team = by_name["swarm/red"]
    send_growth(team, event)
    push = b.agent.pending  # b has not pulled: its pushes are at rank 8
    assert next(iter(push.values())).shape[1] == 8
    old = {m: torch.ones(s[0], 8) for m, s in team.shapes.items()}
    out = team.push("outsider", 1, team.version, old)
    assert out.accepted and team.padded_pushes == 1
    a.pull()
    b.pull()
    assert a.agent.stack.projection_digest() == b.agent.stack.projection_digest()
    for n, m in a.agent.stack.modules.items():
        assert torch.equal(m.P[8:], rows[n].to(m.P))
        gram = m.P.double() @ m.P.double().T
        assert torch.allclose(gram, torch.eye(10, dtype=torch.float64), atol=1e-5)
    assert projection_digest({n: m.P for n, m in a.agent.stack.modules.items()}) == a.agent.stack.projection_digest()
    a.run(2)
    b.run(2)


@pytest.mark.parametrize("step,measure", [("rms", "drive"), ("rms", "gradient"), ("adam", "gradient")])
def test_a_saturated_level_grows_the_swarm_by_itself(step, measure):
    shapes = {"m.q": (16, 2), "m.v": (16, 2)}
    # strong signal in one coordinate per block, a weak steady one in the rest: the rest cools, blocks
    # crystallise. Adam moves the weak coordinates as far as the strong one (a steady sign): the level's
    # temperature must measure the merged gradient for them to cool
    dyn = DynamicsConfig(temperature=TemperatureConfig(heat=0.5, growth_fraction=0.4, measure=measure))
    core = LevelCore("swarm/red", shapes, server=ServerConfig(window=1, step=step), dynamics=dyn,
                     growth=LevelsConfig(rank=2, max_rank=6, grow_after=3, grow_step=2))
    g = {m: torch.full(s, 0.01) for m, s in shapes.items()}
    for t in g.values():
        t[0, 0] = 1.0
    for seq in range(1, 40):
        assert core.push("a", seq, core.version, {m: pad(t, core.rank) for m, t in g.items()}).accepted
    kinds = [e for e in core.events_since(0) if e["kind"] == "growth"]
    assert [core.growths[i][1].to_rank for i in range(len(core.growths))] == [4, 6]  # capped at max_rank
    assert len(kinds) == 2 and core.rank == 6
    assert core.status().to_dict()["rank"] == 6.0
    reply = core.pull(-1)
    assert [e.to_rank for e in reply["growths"]] == [4, 6] and reply["rank"] == 6


def test_under_adam_a_temperature_heated_by_the_drive_never_grows():
    """Why ``levels.grow_after`` with ``server.step: adam`` needs ``dynamics.temperature.measure: gradient``
    (the config refuses the other pairing): the same pushes as above, and no block ever crystallises."""
    shapes = {"m.q": (16, 2), "m.v": (16, 2)}
    dyn = DynamicsConfig(temperature=TemperatureConfig(heat=0.5, growth_fraction=0.4))
    core = LevelCore("swarm/red", shapes, server=ServerConfig(window=1, step="adam"), dynamics=dyn,
                     growth=LevelsConfig(rank=2, max_rank=6, grow_after=3, grow_step=2))
    g = {m: torch.full(s, 0.01) for m, s in shapes.items()}
    for t in g.values():
        t[0, 0] = 1.0
    for seq in range(1, 40):
        assert core.push("a", seq, core.version, g).accepted
    assert core.rank == 2 and core.optimizer.report()["crystallised_fraction"] == 0.0


def pad(t, rank):
    return torch.cat([t, t.new_zeros(t.shape[0], rank - t.shape[1])], dim=1)
