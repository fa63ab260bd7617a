"""The in-process swarm of the experiments: real servers and workers, wired and attacked as claimed."""

import pytest
import torch

from swarm.config.arms import ARMS
from swarm.experiment import scenarios
from swarm.experiment.jobs import Job, job_config
from swarm.experiment.sim import Simulation

FAST = ["workload=synthetic", "workload.seq_len=32", "workload.batch_size=2", "workload.eval_windows=2"]


def sim_for(arm, *extra, **kwargs):
    cfg = job_config("experiment/ci", [*FAST, *extra], Job("t", "team", arm, 0))
    return Simulation(cfg, ARMS[arm], **kwargs)


def test_isolated_agents_have_no_servers_and_send_nothing():
    sim = sim_for("isolated")
    for _ in range(6):
        sim.step()
    assert sim.servers == {}
    assert all(w.agent.steps == 6 and w.bytes_sent == 0 for w in sim.workers.values())


def test_fedavg_is_one_flat_level_every_agent_pushes_to():
    sim = sim_for("fedavg")
    assert list(sim.servers) == ["shared"]
    for _ in range(10):  # fixed interval 5: two pushes per agent
        sim.step()
    core = sim.servers["shared"].core
    counters = core.status().counters
    assert counters.accepted == 8 and counters.merges == 2 and core.aggregator.name == "mean"
    assert not core.optimizer.phase  # the plain server: no section-6 mechanism


def test_the_full_system_has_the_hierarchy_of_servers():
    sim = sim_for("full")
    assert list(sim.servers) == ["foundation", "domain/toy", "swarm/blue", "swarm/red"]
    assert sim.servers["swarm/red"].parent is sim.servers["domain/toy"]


def test_an_attacker_pushes_the_crafted_update_after_each_honest_round():
    sim = sim_for("full", "server.window=8", attackers=["toy/red/a2"], attack_kind="sign_flip")
    assert sorted(sim.workers) == ["toy/blue/b1", "toy/blue/b2", "toy/red/a1"]
    for _ in range(5):
        sim.step()
    window = sim.servers["swarm/red"].core.pending
    assert [r.sender for r in window] == ["toy/red/a1", "toy/red/a2"]
    honest, crafted = window[0].tensors, window[1].tensors
    assert all(torch.equal(crafted[m], -honest[m]) for m in honest)  # sign flip of the one honest push
    assert "swarm/blue" not in sim.attackers


@pytest.mark.parametrize("fraction, expected", [(0.0, []), (0.1, ["d/t1/a4"]), (0.2, ["d/t1/a4", "d/t2/b4"]),
                                                (0.4, ["d/t1/a4", "d/t2/b4", "d/t1/a3", "d/t2/b3"])])
def test_attackers_are_taken_from_the_ends_of_the_teams_in_turn(fraction, expected):
    teams = {"d": {"t1": ["a0", "a1", "a2", "a3", "a4"], "t2": ["b0", "b1", "b2", "b3", "b4"]}}
    assert scenarios.attackers_for(teams, fraction) == expected


def test_a_joiner_learns_on_a_copy_and_leaves_the_servers_as_they_were():
    sim = sim_for("full")
    for _ in range(10):
        sim.step()
    before = {n: (s.core.version, {m: t.clone() for m, t in s.core.B.items()}) for n, s in sim.servers.items()}
    out = scenarios.join(sim, "c1", "red", steps=10, eval_every=5)
    assert out["agent"] == "toy/red/c1" and [s for s, _ in out["curve"]] == [0, 5, 10]
    for n, s in sim.servers.items():
        assert s.core.version == before[n][0]
        assert all(torch.equal(s.core.B[m], before[n][1][m]) for m in s.core.B)


def test_a_switch_changes_the_stream_not_the_identity():
    sim = sim_for("full")
    first = sim.held_out("toy/red/a1").ids.clone()
    out = scenarios.switch(sim, ["b2", "a2", "b1", "a1"], steps=3, eval_every=3)
    assert sim.workers["toy/red/a1"].agent.workload.spec.name == "b2"
    assert not torch.equal(sim.held_out("toy/red/a1").ids, first)
    assert sim.workers["toy/red/a1"].id == "toy/red/a1" and set(out["before"]) == set(sim.workers)
    assert out["forgetting"] == pytest.approx(
        sum(out["after"][a] - out["before"][a] for a in sim.workers) / len(sim.workers))


def test_the_same_seed_gives_the_same_run():
    a = scenarios.team(sim_for("full"), steps=6, eval_every=3, probe_every=2)
    b = scenarios.team(sim_for("full"), steps=6, eval_every=3, probe_every=2)
    assert a["curve"] == b["curve"] and a["agents"] == b["agents"]
    assert set(a["timescales"]) == {"context", "agent", "swarm", "domain", "foundation"}


def test_a_team_oracle_is_one_learner_per_team_on_its_agents_interleaved_files():
    sim = sim_for("oracle_team")
    assert sorted(sim.workers) == ["toy/blue/oracle", "toy/red/oracle"] and sim.servers == {}
    assert sim.model_of == {"toy/red/a1": "toy/red/oracle", "toy/red/a2": "toy/red/oracle",
                            "toy/blue/b1": "toy/blue/oracle", "toy/blue/b2": "toy/blue/oracle"}
    train = sim.workers["toy/red/oracle"].agent.workload.documents.train
    assert [train[i].source.split(":")[1][:8] for i in range(4)] == ["toy/red/", "toy/red/"] * 2
    assert [train[i].source.split("[")[0].rsplit("/", 1)[1] for i in range(4)] == ["a1", "a2", "a1", "a2"]
    assert sim.step() == 2 and all(w.agent.steps == 1 for w in sim.workers.values())
    # every agent is evaluated on its own held-out windows with its team's learner
    own = sim.held_out("toy/red/a2")
    assert torch.equal(own.ids, sim_for("isolated").held_out("toy/red/a2").ids)
    assert sim.evaluate("toy/red/a2") == sim.workers["toy/red/oracle"].agent.evaluate(["agent"], own)


def test_oracle_scopes_and_steps():
    assert list(sim_for("oracle_domain").workers) == ["toy/all/oracle"]
    assert list(sim_for("oracle_all").workers) == ["all/all/oracle"]
    sim = sim_for("oracle_team", "experiment.oracle_steps=scope")
    assert sim.step() == 4 and all(w.agent.steps == 2 for w in sim.workers.values())  # its 2 agents' steps


def test_transfer_scores_every_agent_on_each_group_of_files():
    sim = sim_for("isolated")
    groups = scenarios.groups(sim, "toy/red/a1")
    assert groups == {"own": ["toy/red/a1"], "team": ["toy/red/a2"], "domain": ["toy/blue/b1", "toy/blue/b2"],
                      "others": ["toy/blue/b1", "toy/blue/b2"], "other_domains": []}
    out = scenarios.transfer(sim)
    rec = out["toy/red/a1"]
    assert set(rec) == {f"{g}{s}" for g in ("own", "team", "domain", "others") for s in ("", "_local", "_base")}
    assert rec["own"] == sim.evaluate("toy/red/a1") and rec["team"] == sim.evaluate("toy/red/a1", sim.held_out(
        "toy/red/a2"))
    assert rec["team_base"] == out["toy/red/a2"]["own_base"]  # the same windows, the same base
    both = scenarios.group_windows(sim, ["toy/blue/b1", "toy/blue/b2"], 2)
    assert len(both) == 2 and torch.equal(both.ids[1], sim.held_out("toy/blue/b2").ids[1])
