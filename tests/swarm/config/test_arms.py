import pytest

from layers.merge import AGGREGATORS
from swarm.config import ConfigError, load_config
from swarm.config.arms import ABLATIONS, ARMS, BASELINE_AGGREGATORS, MECHANISMS
from swarm.experiment.jobs import Job, job_config, plan

CONFIGS = ["experiment/team", "experiment/ci"]


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("arm", sorted(ARMS))
def test_every_arm_loads_with_every_experiment_config(config, arm):
    cfg = job_config(config, [], Job("x", "team", arm, seed=3))
    assert cfg.workload.seed == 3 and cfg.levels.seed == 3


def test_arms_change_what_they_say():
    full = load_config("experiment/team")
    iso = job_config("experiment/team", [], Job("x", "team", "isolated", 0))
    assert iso.levels.names == ["context", "agent"]
    fed = job_config("experiment/team", [], Job("x", "team", "fedavg", 0))
    assert fed.levels.names == ["context", "agent", "shared"] and ARMS["fedavg"].scopes == ("all",)
    assert fed.merge.aggregator == "mean" and ARMS["fedavg"].plain_servers
    assert not fed.dynamics.sync.enabled and fed.dynamics.sync.min_interval == full.dynamics.sync.max_interval
    hier = job_config("experiment/team", [], Job("x", "team", "hier_mean", 0))
    assert hier.merge.aggregator == "mean" and hier.run.propose_every > 10**6 and hier.levels.names == full.levels.names
    assert not job_config("experiment/team", [], Job("x", "team", "no_promotion", 0)).circuits.promote
    for m in MECHANISMS:  # exactly one mechanism off per ablation
        cfg = job_config("experiment/team", [], Job("x", "team", f"no_{m}", 0))
        off = [n for n in MECHANISMS if not getattr(cfg.dynamics, n).enabled]
        assert off == [m]
    assert sorted(a[4:] for a in BASELINE_AGGREGATORS) == sorted(set(AGGREGATORS) - {"resonance"})
    assert len(ABLATIONS) == len(MECHANISMS) + 1


def test_unknown_arms_and_scenarios_are_refused_by_name():
    with pytest.raises(ConfigError, match="unknown arm 'fedprox'"):
        load_config("experiment/ci", ["experiment.arms=[full,fedprox]"])
    with pytest.raises(ConfigError, match="'forgetting' is not one of"):
        load_config("experiment/ci", ["experiment.scenarios=[forgetting]"])
    with pytest.raises(ConfigError, match="unknown attack 'flood'"):
        load_config("experiment/ci", ["experiment.attack.kind=flood"])
    with pytest.raises(ConfigError, match="fractions"):
        load_config("experiment/ci", ["experiment.attack.fractions=[0.6]"])


def test_the_plan_gives_every_arm_the_same_steps_and_seeds():
    cfg = load_config("experiment/team")
    jobs = plan(cfg)
    team = [j for j in jobs if j.id.startswith("team/")]
    assert {j.arm for j in team} == set(cfg.experiment.arms)
    for arm in cfg.experiment.arms:
        assert sorted(j.seed for j in team if j.arm == arm) == cfg.experiment.seeds
    main = {j.arm: j.phases for j in team}
    assert main["full"] == ("team", "join", "switch") and main["no_mass"] == ("team",)
    attack = [j for j in jobs if j.kind == "attack"]
    assert len(attack) == len(cfg.experiment.attack.arms) * len(cfg.experiment.seeds) * 7  # clean + 3 + 3
    sweeps = [j.id for j in jobs if j.id.startswith("sweep/")]
    assert "sweep/traces-8/s0" not in sweeps and "sweep/traces-4/s0" in sweeps  # 8 is the team job itself
    assert len(set(j.id for j in jobs)) == len(jobs)


def test_arm_overrides_change_their_arm_only_and_after_the_arms_own():
    ov = ["experiment.arm_overrides={full: [agent.lr_agent=1e-3], fedavg: ['levels.names=[context,agent,shared,x]']}"]
    full = job_config("experiment/ci", ov, Job("x", "team", "full", 0))
    iso = job_config("experiment/ci", ov, Job("x", "team", "isolated", 0))
    fed = job_config("experiment/ci", ov, Job("x", "team", "fedavg", 0))
    assert full.agent.lr_agent == 1e-3 and iso.agent.lr_agent == load_config("experiment/ci").agent.lr_agent
    assert fed.levels.names[-1] == "x"  # applied after the fedavg arm's own levels.names


def test_bad_arm_overrides_are_refused_by_name():
    with pytest.raises(ConfigError, match="arm_overrides: unknown arm 'fedprox'"):
        load_config("experiment/ci", ["experiment.arm_overrides={fedprox: [agent.lr_agent=1e-3]}"])
    with pytest.raises(ConfigError, match=r"arm_overrides.full: 'agent.lr_agent' is not a config override"):
        load_config("experiment/ci", ["experiment.arm_overrides={full: [agent.lr_agent]}"])
    with pytest.raises(ConfigError, match="outside the experiment section"):
        load_config("experiment/ci", ["experiment.arm_overrides={full: [experiment.steps=3]}"])
