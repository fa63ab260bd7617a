import pytest
import torch

from agents.agent import Agent
from agents.config import AgentConfig, ModelConfig, WorkloadConfig
from agents.text import Windows
from agents.topology import agent_specs
from layers import LevelsConfig
from layers.circuits import CircuitsConfig, consensus

WORKLOAD = WorkloadConfig(kind="synthetic", topology={"toy": {"red": ["a1", "a2"]}}, steps_per_context=12,
                          batch_size=4, seq_len=64, eval_windows=8)
MODEL = ModelConfig(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128)


def make(name="a1", **kwargs):
    spec = next(s for s in agent_specs(WORKLOAD) if s.name == name)
    return Agent(spec, model=MODEL, levels=LevelsConfig(rank=16), workload=WORKLOAD, **kwargs)


def test_agent_learns_its_stream_with_its_local_levels():
    agent = make()
    before = agent.evaluate()
    for _ in range(60):
        agent.step()
    assert agent.evaluate([agent.fast, agent.slow]) < before - 0.8
    assert agent.evaluate([agent.slow]) < before - 0.5  # what outlives the contexts
    shared = agent.stack.level_state("swarm")
    assert all(float(t.abs().sum()) == 0 for t in shared.values())  # shared levels only change by pulls


def test_evaluate_is_the_shared_bits_per_byte_and_restores_the_enabled_levels():
    from layers.eval import bits_per_byte, model_bits_per_byte

    agent = make()
    for _ in range(3):
        agent.step()
    held = agent.workload.held_out  # ids (N, T+1)
    with agent.stack.using([agent.slow]), torch.no_grad():
        expected = bits_per_byte(agent.model(held.inputs).logits, held.targets, held.target_bytes)
        assert model_bits_per_byte(agent.model, held.ids) == pytest.approx(expected, rel=1e-6)
    before = agent.stack.enabled
    assert agent.evaluate([agent.slow]) == pytest.approx(expected, rel=1e-6)
    assert agent.stack.enabled == before
    with pytest.raises(ValueError, match="windows"):
        agent.evaluate([agent.slow], Windows(held.ids[:, :1], held.target_bytes[:, :0]))
    assert agent.stack.enabled == before


def test_same_config_same_trajectory():
    a, b = make(), make()
    assert [a.step()["bpb"] for _ in range(3)] == [b.step()["bpb"] for _ in range(3)]


def test_a_resumed_agent_continues_exactly_where_its_state_was_taken():
    from cluster.state import flatten, unflatten

    a = make()
    for _ in range(15):  # crosses a context boundary (12 steps per context)
        a.step()
    tensors, skeleton = flatten(a.state_dict())
    saved = {k: v.clone() for k, v in tensors.items()}  # as if read back from disk
    expected = [a.step()["bpb"] for _ in range(10)]
    b = make()
    b.load_state_dict(unflatten(saved, skeleton))
    assert b.steps == 15 and [b.step()["bpb"] for _ in range(10)] == expected


def test_pushes_carry_the_accumulated_gradient_when_the_gate_fires():
    agent = make()
    push = None
    for _ in range(60):
        agent.step()
        push = push or agent.take_push()
    assert push is not None and push["sender"] == "toy/red/a1" and push["seq"] == 1
    assert push["reason"] in ("coherent", "max_interval")
    assert set(push["tensors"]) == set(agent.stack.module_names)
    name = agent.stack.module_names[0]
    assert push["tensors"][name].shape == agent.stack.modules[name].B["swarm"].shape
    assert agent.take_push() is None or agent.seq == 2


def test_load_shared_is_validated():
    agent = make()
    state = agent.stack.level_state("swarm")
    name = agent.stack.module_names[0]
    state[name] = torch.ones_like(state[name])
    agent.load_shared("swarm", state)
    assert float(agent.stack.modules[name].B["swarm"].detach().sum()) == state[name].numel()
    with pytest.raises(ValueError, match="not a shared level"):
        agent.load_shared("agent", state)
    bad = dict(state)
    bad[name] = bad[name][:, :-1]
    with pytest.raises(ValueError, match="has shape"):
        agent.load_shared("swarm", bad)


def test_context_boundary_promotes_then_resets_the_context_level():
    agent = make(circuits=CircuitsConfig(min_age=5, score_threshold=0.6))
    promoted = 0
    for _ in range(49):
        promoted += agent.step()["promoted"]
    assert promoted > 0 and agent.promoter.counters["promoted"] + agent.promoter.counters["bypassed"] == promoted
    agent.context_boundary()
    assert all(float(t.abs().sum()) == 0 for t in agent.stack.level_state("context").values())


def test_proposals_feed_consensus_and_removal_takes_the_projection_out():
    agents = [make("a1", circuits=CircuitsConfig(min_age=2, score_threshold=0.5)),
              make("a2", circuits=CircuitsConfig(min_age=2, score_threshold=0.5))]
    for _ in range(40):
        for a in agents:
            a.step()
    proposals = [p for a in agents for p in a.propose()]
    assert proposals, "no stable agent-level circuit after 40 steps"
    shapes = {n: tuple(m.B["agent"].shape) for n, m in agents[0].stack.modules.items()}
    result = consensus(proposals, shapes)
    assert not [r for _, r in result.rejected if "shape" in r or "unknown" in r]
    p = proposals[0]
    owner = next(a for a in agents if a.id == p.agent_id)
    owner.remove(p.module, p.u, p.w)
    b = owner.stack.modules[p.module].B["agent"].detach()
    assert abs(float(p.u @ b @ p.w)) < 1e-5


def test_bad_agent_config():
    with pytest.raises(ValueError, match="agent.lr_context"):
        AgentConfig(lr_context=0)
    with pytest.raises(ValueError, match="at least two levels"):
        Agent(agent_specs(WORKLOAD)[0], model=MODEL, levels=LevelsConfig(names=["only"], rank=4), workload=WORKLOAD)
