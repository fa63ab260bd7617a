"""Scenario (d)'s attackers wired into the real servers: crafted pushes and poisoning members."""

import pytest
import torch

from layers.merge.attacks import attack_updates
from swarm.config import ConfigError, load_config
from swarm.config.arms import ARMS
from swarm.experiment import scenarios
from swarm.experiment.jobs import Job, job_config
from swarm.experiment.sim import Simulation

FAST = ["workload=synthetic", "workload.seq_len=32", "workload.batch_size=2", "workload.eval_windows=2"]


def sim_for(arm, *extra, **kwargs):
    cfg = job_config("experiment/ci", [*FAST, *extra], Job("t", "attack", arm, 0))
    return Simulation(cfg, ARMS[arm], **kwargs)


@pytest.mark.parametrize("kind", ["ipm_large", "alie_opt", "min_max"])
def test_a_crafted_push_is_the_attack_of_its_round(kind):
    """Flat FedAvg, three honest agents and one attacker: after the round's three honest pushes the
    attacker's push is exactly ``attack_updates`` of those three (n = 4 senders)."""
    sim = sim_for("fedavg", "server.window=8", attackers=["toy/red/a2"], attack_kind=kind)
    for _ in range(5):  # fixed push interval 5: one round
        sim.step()
    window = sim.servers["shared"].core.pending
    assert sorted(r.sender for r in window[:3]) == ["toy/blue/b1", "toy/blue/b2", "toy/red/a1"]
    assert window[3].sender == "toy/red/a2"  # the crafted push comes right after the round
    names = list(window[0].tensors)
    honest = torch.stack([torch.cat([r.tensors[m].flatten() for m in names]) for r in window[:3]])
    expected = attack_updates(kind, honest, 1, n=4)[0]
    got = torch.cat([window[3].tensors[m].flatten() for m in names])
    torch.testing.assert_close(got, expected)
    assert sim.attackers["shared"].sent == 1


def test_a_poisoner_is_a_member_learning_another_package_and_is_not_evaluated():
    sim = sim_for("fedavg", "server.window=8", "experiment.attack.poison_domain=other",
                  "experiment.attack.poison=[alien]", attackers=["toy/red/a2"], attack_kind="poison")
    out = scenarios.attacked(sim, 5)
    poisoner = sim.workers["toy/red/a2"]
    assert (poisoner.agent.workload.spec.name, poisoner.agent.workload.spec.domain) == ("alien", "other")
    assert poisoner.agent.spec.id == "toy/red/a2"  # its identity (and route) is the attacker's
    assert poisoner.agent.steps == 5 and poisoner.bytes_sent > 0
    pending = [r.sender for r in sim.servers["shared"].core.pending]
    assert sorted(pending) == ["toy/blue/b1", "toy/blue/b2", "toy/red/a1", "toy/red/a2"]
    assert sim.attackers["shared"].sent == 1 and out["attack_pushes"] == 1  # its own push, not a crafted one
    assert sorted(out["own"]) == ["toy/blue/b1", "toy/blue/b2", "toy/red/a1"]  # honest agents only
    # its data is the other package's: not the stream the attacker's own name would give
    own_stream = sim_for("fedavg").workers["toy/red/a2"].agent.workload
    assert not torch.equal(poisoner.agent.workload.held_out.ids, own_stream.held_out.ids)


def test_attack_config_names_a_bad_kind_and_accepts_poison():
    cfg = load_config("experiment/attack", ["experiment.attack.kinds=[poison,min_sum]"])
    assert cfg.experiment.attack.kinds == ["poison", "min_sum"]
    with pytest.raises(ConfigError, match="'bogus'"):
        load_config("experiment/attack", ["experiment.attack.kinds=[bogus]"])
    with pytest.raises(ConfigError, match="poison"):
        load_config("experiment/attack", ["experiment.attack.poison=[]"])


def test_a_configured_attack_topology_replaces_the_default_whole():
    topo = load_config("experiment/attack").experiment.attack.topology
    assert list(topo) == ["python"] and sorted(topo["python"]) == ["sympy", "transformers"]
    assert all(len(agents) == 5 for agents in topo["python"].values())
    assert set(load_config("experiment/ci").experiment.attack.topology["python"]) == {"text", "net"}
