"""``agent.device`` and precision on CPU: the config, device resolution, Ray placement, and the
device-independent contract (what an agent hands out is CPU float32; what it reloads is bit for bit)."""

import dataclasses

import pytest
import torch

from agents.agent import Agent
from agents.config import AgentConfig, ModelConfig, WorkloadConfig
from agents.device import placement, resolve_device, to_device, to_host
from agents.topology import agent_specs
from cluster.config import ServerConfig
from cluster.level.core import LevelCore
from cluster.state import flatten, unflatten
from layers import LevelsConfig
from layers.dynamics import DynamicsConfig, SyncConfig

WORKLOAD = WorkloadConfig(kind="synthetic", topology={"toy": {"red": ["a1", "a2"]}}, steps_per_context=12,
                          batch_size=4, seq_len=32, eval_windows=4)
MODEL = ModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
FAST = AgentConfig(lr_context=3e-2, lr_agent=3e-2)
DYNAMICS = DynamicsConfig(sync=SyncConfig(max_interval=6))  # a push within a few steps


def make_agent(name="a1", *, model=MODEL, agent=FAST) -> Agent:
    spec = next(s for s in agent_specs(WORKLOAD) if s.name == name)
    return Agent(spec, model=model, levels=LevelsConfig(rank=8), workload=WORKLOAD, agent=agent, dynamics=DYNAMICS)


def tensors_of(obj):
    """Every tensor inside nested dicts, lists and tuples."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in tensors_of(v)]
    if isinstance(obj, list | tuple):
        return [t for v in obj for t in tensors_of(v)]
    return []


def push_merge_reload(agent: Agent, tmp_path, max_steps: int = 6) -> dict[str, torch.Tensor]:
    """Step ``agent`` until its gate fires; merge the push on a CPU ``LevelCore`` with a store; reload the
    merged level from a restarted core into ``agent``. Asserts every hop is bit for bit; returns the level."""
    push = None
    for _ in range(max_steps):
        agent.step()
        push = agent.take_push()
        if push is not None:
            break
    assert push is not None, "the sync gate never fired"
    assert all(t.device.type == "cpu" and t.dtype == torch.float32 for t in push["tensors"].values())
    shapes = {name: tuple(t.shape) for name, t in push["tensors"].items()}
    core = LevelCore("swarm/red", shapes, server=ServerConfig(window=1), store_dir=tmp_path / "swarm", config_hash="h")
    assert core.push(agent.id, push["seq"], core.version, push["tensors"]).accepted and core.version == 1
    core.checkpoint()
    merged = core.pull()["tensors"]
    assert any(float(t.abs().sum()) > 0 for t in merged.values())  # the merge moved the level
    restarted = LevelCore("swarm/red", shapes, server=ServerConfig(window=1), store_dir=tmp_path / "swarm",
                          config_hash="h")
    reloaded = restarted.pull()["tensors"]
    assert all(torch.equal(merged[n], reloaded[n]) for n in merged)  # from disk, bit for bit
    agent.load_shared("swarm", reloaded)
    assert {m.B["swarm"].device for m in agent.stack.modules.values()} == {agent.device}
    back = agent.stack.level_state("swarm")
    assert all(t.device.type == "cpu" and torch.equal(t, merged[n]) for n, t in back.items())
    return merged


# ---------------------------------------------------------------------- config and resolution
@pytest.mark.parametrize("value", ["gpu", "cuda:", "cuda:x", "CUDA", "cuda:-1", "", "mps", 0])
def test_agent_device_is_validated_by_name(value):
    with pytest.raises(ValueError, match=r"agent\.device: .* is not one of auto, cpu, cuda, cuda:N"):
        AgentConfig(device=value)


@pytest.mark.parametrize("value", [0, -0.5, 1.5, float("nan"), True, "half"])
def test_gpus_per_agent_is_a_share_of_one_gpu(value):
    with pytest.raises(ValueError, match=r"agent\.gpus_per_agent"):
        AgentConfig(gpus_per_agent=value)


def test_device_settings_load_from_overrides():
    from swarm.config import ConfigError, load_config

    cfg = load_config(None, ["agent.device=cuda:1", "agent.gpus_per_agent=0.5"])
    assert (cfg.agent.device, cfg.agent.gpus_per_agent) == ("cuda:1", 0.5)
    assert load_config(None, []).agent.device == "cpu"  # the default: CPU unless asked
    with pytest.raises(ConfigError, match=r"agent\.device"):
        load_config(None, ["agent.device=gpu"])


def test_resolve_device(monkeypatch):
    import agents.device as device

    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(device, "cuda_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match=r"agent\.device: 'cuda' but torch sees no CUDA device"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match=r"agent\.device: 'cuda:0' but torch sees no CUDA device"):
        resolve_device("cuda:0")
    monkeypatch.setattr(device, "cuda_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(ValueError, match=r"agent\.device: 'cuda:2' but only 2 CUDA device\(s\)"):
        resolve_device("cuda:2")


def test_an_agent_on_cuda_without_cuda_says_so(monkeypatch):
    import agents.device as device

    monkeypatch.setattr(device, "cuda_available", lambda: False)
    with pytest.raises(ValueError, match=r"agent\.device: 'cuda'"):
        make_agent(agent=dataclasses.replace(FAST, device="cuda"))


@pytest.mark.parametrize("device, cluster_gpus, expected", [
    ("cpu", 0, ("cpu", 0.0)), ("cpu", 8, ("cpu", 0.0)),
    ("auto", 0, ("cpu", 0.0)), ("auto", 1, ("cuda", 0.25)),
    ("cuda", 0, ("cuda", 0.25)), ("cuda:3", 4, ("cuda", 0.25)),
])
def test_placement_asks_ray_for_a_gpu_share_only_on_cuda(device, cluster_gpus, expected):
    assert placement(device, 0.25, cluster_gpus) == expected


def test_agent_actors_carry_the_resolved_device_and_their_gpu_share():
    from cluster.actors import agent_resources

    configs = {"model": MODEL, "agent": AgentConfig(device="auto", gpus_per_agent=0.5)}
    on_cpu, gpus = agent_resources(configs, cluster_gpus=0)
    assert on_cpu["agent"].device == "cpu" and gpus == 0 and on_cpu["model"] is MODEL
    on_gpu, gpus = agent_resources(configs, cluster_gpus=2)
    assert on_gpu["agent"].device == "cuda" and gpus == 0.5
    assert configs["agent"].device == "auto"  # the run's config is not changed
    assert agent_resources({"model": MODEL}, cluster_gpus=2) == ({"model": MODEL}, 0.0)


def test_to_host_and_to_device_walk_nested_state():
    state = {"a": [torch.ones(2, requires_grad=True), (torch.zeros(1), 3)], "b": "x", "c": None}
    host = to_host(state)
    assert host["b"] == "x" and host["c"] is None and host["a"][1][1] == 3
    assert isinstance(host["a"][1], tuple) and not host["a"][0].requires_grad
    moved = to_device(host, "cpu")
    assert all(t.device.type == "cpu" for t in tensors_of(moved))


# ---------------------------------------------------------------------- the CPU-side contract
def test_what_an_agent_hands_out_is_cpu_float32_and_reloads_bit_for_bit(tmp_path):
    agent = make_agent()
    assert agent.device == torch.device("cpu")
    merged = push_merge_reload(agent, tmp_path)
    other = make_agent("a2")  # a teammate pulls the same version: the same bits
    other.load_shared("swarm", merged)
    assert all(torch.equal(t, merged[n]) for n, t in other.stack.level_state("swarm").items())
    assert all(p.u.device.type == "cpu" and p.w.device.type == "cpu" for p in agent.propose())


def test_a_pushed_gradient_is_a_copy():
    agent = make_agent()
    push = None
    while push is None:
        agent.step()
        push = agent.take_push()
    name = next(iter(push["tensors"]))
    push["tensors"][name].fill_(7.0)
    assert float(agent.pending[name].abs().sum()) == 0  # zeroed by the push, untouched by the caller


def test_state_dict_is_on_cpu_and_round_trips_bit_for_bit():
    a = make_agent()
    for _ in range(14):  # crosses a context boundary (12 steps per context)
        a.step()
    state = a.state_dict()
    floats = [t for t in tensors_of(state) if t.is_floating_point()]
    assert all(t.device.type == "cpu" for t in tensors_of(state))
    assert floats and {t.dtype for t in floats} == {torch.float32}
    tensors, skeleton = flatten(state)
    saved = {k: v.clone() for k, v in tensors.items()}  # as if read back from disk
    b = make_agent()
    b.load_state_dict(unflatten(saved, skeleton))
    again, skeleton_again = flatten(b.state_dict())
    assert skeleton_again == skeleton and again.keys() == saved.keys()
    assert all(torch.equal(again[k], saved[k]) for k in saved)
    assert b.evaluate() == a.evaluate()
    assert b.step()["bpb"] == a.step()["bpb"]


# ---------------------------------------------------------------------- a bf16 base on CPU
def test_a_bf16_base_learns_with_float32_levels_and_optimizer_state(tmp_path):
    agent = make_agent(model=dataclasses.replace(MODEL, dtype="bfloat16"))
    frozen = [p for p in agent.model.parameters() if not p.requires_grad and p.dim() > 0]
    base = {p.dtype for n, p in agent.model.named_parameters() if ".B." not in n}
    assert frozen and base == {torch.bfloat16}
    assert {b.dtype for b in agent.stack.parameters()} == {torch.float32}
    before = agent.evaluate()
    merged = push_merge_reload(agent, tmp_path)  # steps until a push, merges it on CPU, reloads it
    for _ in range(max(0, 10 - agent.steps)):
        agent.step()
    after = agent.evaluate()
    assert after < before - 0.1, (before, after)
    assert all(t.dtype == torch.float32 for t in merged.values())
    state = agent.state_dict()
    for part in ("levels", "moments", "optimizers", "pending", "gate"):
        floats = [t for t in tensors_of(state[part]) if t.is_floating_point()]
        assert floats and {t.dtype for t in floats} == {torch.float32}, part
    assert all(g.dtype == torch.float32 for m in agent.moments.values() for g in m)
    assert agent.evaluate([agent.slow]) > 0
