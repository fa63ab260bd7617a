"""Agents on CUDA (runs only where torch sees a GPU; ``bench/gpu.py`` times the same path).

A short swarm of bf16 agents on the GPU exchanging through CPU level cores, a push merged on
CPU and reloaded bit for bit, a CUDA checkpoint resumed on CPU, and the PEFT round trip on
the GPU. The CPU side of the same contract is tested in ``tests/agents/test_device.py``.
"""

import dataclasses
import warnings

import pytest
import torch

from agents.topology import agent_specs
from cluster.config import RuntimeConfig, ServerConfig
from cluster.level.core import LevelCore
from cluster.state import flatten, unflatten
from cluster.topology import Topology
from cluster.worker import AgentWorker
from layers import LevelsConfig, LevelStack
from tests.agents.test_device import DYNAMICS, FAST, MODEL, WORKLOAD, make_agent, push_merge_reload, tensors_of
from tests.conftest import make_tiny, randomize

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs a CUDA device (torch.cuda.is_available() is False)")

CUDA = dataclasses.replace(FAST, device="cuda")
BF16 = dataclasses.replace(MODEL, dtype="bfloat16")


def test_a_cuda_agent_keeps_float32_levels_on_the_gpu_and_hands_out_cpu_tensors(tmp_path):
    agent = make_agent(model=BF16, agent=CUDA)
    assert agent.device.type == "cuda"
    assert {p.device.type for p in agent.model.parameters()} == {"cuda"}
    assert {b.dtype for b in agent.stack.parameters()} == {torch.float32}
    before = agent.evaluate()
    merged = push_merge_reload(agent, tmp_path)  # a push from the GPU merges on CPU and reloads bit for bit
    other = make_agent("a2", model=BF16)  # a CPU teammate pulls the same version: the same bits
    other.load_shared("swarm", merged)
    assert all(torch.equal(t, merged[n]) for n, t in other.stack.level_state("swarm").items())
    for _ in range(10):
        agent.step()
    assert agent.evaluate() < before - 0.1
    state = agent.state_dict()
    assert all(t.device.type == "cpu" for t in tensors_of(state))
    assert all(p.u.device.type == "cpu" for p in agent.propose())


def test_a_checkpoint_from_the_gpu_resumes_on_cpu_and_on_the_gpu_bit_for_bit():
    a = make_agent(agent=CUDA)
    for _ in range(14):
        a.step()
    tensors, skeleton = flatten(a.state_dict())
    for agent in (make_agent(), make_agent(agent=CUDA)):
        agent.load_state_dict(unflatten({k: v.clone() for k, v in tensors.items()}, skeleton))
        again, _ = flatten(agent.state_dict())
        assert all(torch.equal(again[k], tensors[k]) for k in tensors), agent.device


def test_float32_on_cuda_computes_what_it_computes_on_cpu():
    on_cpu, on_gpu = make_agent(), make_agent(agent=CUDA)
    assert on_gpu.evaluate() == pytest.approx(on_cpu.evaluate(), rel=1e-4)
    for _ in range(3):
        assert on_gpu.step()["bpb"] == pytest.approx(on_cpu.step()["bpb"], rel=1e-3)


def test_a_short_swarm_of_bf16_agents_on_cuda_with_cpu_level_servers():
    levels = LevelsConfig(rank=8)
    topo = Topology(WORKLOAD, levels.names[2:])
    agents = [make_agent(spec.name, model=BF16, agent=CUDA) for spec in agent_specs(WORKLOAD)]
    shapes = {n: tuple(m.B["swarm"].shape) for n, m in agents[0].stack.modules.items()}
    cores = {s.name: LevelCore(s.name, shapes, server=ServerConfig(window=2), dynamics=DYNAMICS, parent=s.parent,
                               children=s.children) for s in topo.servers}
    runtime = RuntimeConfig(pull_every=2, propose_every=10, eval_every=10, checkpoint_every=100)
    workers = [AgentWorker(agent, {lvl: cores[n] for lvl, n in topo.route(agent.id).items()}, runtime)
               for agent in agents]
    for _ in range(4):
        for w in workers:
            rec = w.run(5)
            assert rec["device"].startswith("cuda")
    team = cores["swarm/red"]
    assert team.status().counters.merges >= 2 and all(t.device.type == "cpu" for t in team.B.values())
    for w in workers:
        w.pull()
        for n, m in w.agent.stack.modules.items():  # each agent runs with exactly the server's level
            assert torch.equal(m.B["swarm"].detach().cpu(), team.B[n])
        assert w.last_eval < w.eval_start


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-4), (torch.bfloat16, 2e-2)])
def test_peft_round_trip_on_cuda(tmp_path, tokens, dtype, tolerance):
    from peft import PeftModel

    model = make_tiny("llama").to("cuda", dtype)
    stack = LevelStack.attach(model, LevelsConfig(rank=8, scale=0.5))
    assert {b.device.type for b in stack.parameters()} == {"cuda"}
    randomize(stack, std=0.1)
    directory = stack.export_peft("agent", tmp_path / "agent")
    stack.set_enabled(["agent"])
    ids = tokens.to("cuda")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = model(ids).logits.float()
        theirs = PeftModel.from_pretrained(make_tiny("llama").to("cuda", dtype), str(directory)).eval()(ids)
    assert float((ours - theirs.logits.float()).abs().max()) < tolerance
    reimported = LevelStack.attach(make_tiny("llama").to("cuda", dtype), LevelsConfig(rank=8, scale=0.5))
    reimported.import_peft("agent", directory)
    for n, t in reimported.level_state("agent").items():  # back from disk onto the GPU
        torch.testing.assert_close(t, stack.level_state("agent")[n], rtol=1e-5, atol=1e-7)
