"""The Flower anchor arm (``flower_fedavg``): its inputs are our arms' streams and windows, it runs end to end
in ``.venv-flower`` through Flower's simulation engine, and its result is a team job the report shows."""

import dataclasses
import json
import math

import pytest
from safetensors.torch import load_file

from swarm.config import load_config
from swarm.config.arms import ARMS
from swarm.experiment import flower_arm, scenarios
from swarm.experiment.jobs import Job, job_config, plan, run_job
from swarm.experiment.report import write_report
from swarm.experiment.sim import Simulation

# two clients of one team (so teammates' files exist), a base built from config, 10 steps = 2 FedAvg rounds
TINY = ["workload=synthetic", "workload.seq_len=32", "workload.batch_size=4", "workload.eval_windows=8",
        "workload.topology={toy: {red: [a1, a2]}}", "experiment.steps=10", "experiment.eval_every=5",
        "experiment.seeds=[0]", "experiment.scenarios=[team]", "experiment.arms=[fedavg,flower_fedavg]"]


def _has_flower() -> bool:
    try:
        flower_arm.flower_python()
    except RuntimeError:
        return False
    return True


needs_flower = pytest.mark.skipif(not _has_flower(), reason="no .venv-flower here: `bash infra/setup.sh flower` "
                                  "makes it (CI's `bash infra/setup.sh dev` does)")


def test_the_inputs_are_the_fedavg_arms_streams_and_windows(tmp_path):
    cfg = job_config("experiment/ci", TINY, Job("t", "team", "flower_fedavg", 0))
    spec = flower_arm.write_inputs(cfg, 0, tmp_path)
    tensors = load_file(str(tmp_path / "inputs.safetensors"))
    sim = Simulation(job_config("experiment/ci", TINY, Job("t", "team", "fedavg", 0)), ARMS["fedavg"])
    assert [a["id"] for a in spec["agents"]] == sim.agent_ids == ["toy/red/a1", "toy/red/a2"]
    for i, a in enumerate(sim.agent_ids):  # the batches Agent.step would draw, in order
        stream = sim.workers[a].agent.workload
        assert all((tensors[f"train.{i}"][t].long() == stream.next_batch()[0].ids).all() for t in range(10))
        for group, members in scenarios.groups(sim, a).items():
            k = spec["agents"][i]["groups"].get(group)
            assert (k is None) == (not members)
            if members:  # the windows scenarios.transfer scores this group on
                w = scenarios.group_windows(sim, members, cfg.workload.eval_windows)
                assert (tensors[f"eval.{k}.ids"].long() == w.ids).all()
                assert (tensors[f"eval.{k}.bytes"].long() == w.target_bytes).all()
    assert spec["local_steps"] == cfg.dynamics.sync.max_interval == 5 and spec["lora"]["r"] == cfg.levels.rank
    assert {t.rsplit(".", 1)[-1] for t in spec["lora"]["target_modules"]} == {
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def test_a_missing_environment_fails_before_any_work_naming_the_setup(monkeypatch, tmp_path):
    monkeypatch.setenv(flower_arm.PYTHON_ENV, str(tmp_path / "nowhere" / "python"))
    cfg = load_config("experiment/ci", TINY)
    with pytest.raises(RuntimeError, match=r"missing; create it with `bash infra/setup\.sh flower`"):
        plan(cfg)
    cfg = load_config("experiment/ci", [*TINY, "experiment.arms=[fedavg]"])
    assert [j.arm for j in plan(cfg)] == ["fedavg"]  # without the arm nothing needs .venv-flower


def test_the_arm_runs_the_team_phase_only():
    cfg = load_config("experiment/ci", [*TINY, "experiment.scenarios=[team,join]",
                                        "experiment.join.arms=[flower_fedavg]"])
    with pytest.raises(ValueError, match="'flower_fedavg' runs outside our code .* the join arms"):
        plan(cfg)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("flower")
    cfg = load_config("experiment/ci", TINY)
    jobs = plan(cfg)
    assert sorted(j.id for j in jobs) == ["team/fedavg/s0", "team/flower_fedavg/s0"]
    (root / "jobs").mkdir()
    for job in jobs:
        (root / "jobs" / job.file).write_text(json.dumps(run_job("experiment/ci", TINY, job)) + "\n")
    stamp = {"config": "experiment/ci", "overrides": TINY, "base": "(built from config)",
             "experiment": json.loads(json.dumps(dataclasses.asdict(cfg.experiment)))}
    (root / "experiment.json").write_text(json.dumps(stamp))
    return root


@pytest.mark.slow
@needs_flower
def test_flower_fedavg_learns_and_its_result_is_a_team_job(run_dir):
    ours = json.loads((run_dir / "jobs" / "team__fedavg__s0.json").read_text())
    job = json.loads((run_dir / "jobs" / "team__flower_fedavg__s0.json").read_text())
    assert (job["id"], job["kind"], job["arm"], job["seed"]) == ("team/flower_fedavg/s0", "team", "flower_fedavg", 0)
    assert job["flower"]["flwr"].startswith("1.42.") and job["flower"]["ray"] == "2.55.1"
    assert (job["flower"]["rounds"], job["flower"]["local_steps"], job["flower"]["clients"]) == (2, 5, 2)
    agents = job["team"]["agents"]
    assert set(agents) == set(ours["team"]["agents"])
    for a, rec in agents.items():  # every group our arm is scored on, with the global model and the base alone
        assert {k for k in ours["team"]["agents"][a] if not k.endswith("_local")} == set(rec)
        assert all(isinstance(v, float) and math.isfinite(v) for v in rec.values())
        same = ours["team"]["agents"][a]["own_base"]  # the same base on the same windows
        assert rec["own_base"] == pytest.approx(same, abs=1e-6)
        assert rec["own"] < rec["own_base"] - 0.1  # bits per byte fell on its own files
    curve = job["team"]["curve"]
    assert [t for t, _ in curve] == [0, 5, 10] and curve[-1][1] < curve[0][1]
    assert job["team"]["bytes_per_step"] == 4 * job["flower"]["lora_parameters"] / 5


@pytest.mark.slow
@needs_flower
def test_the_report_shows_flower_fedavg_next_to_fedavg(run_dir):
    report = write_report(run_dir).read_text()
    team = report.split("## (a) Team learning")[1].split("\n## ")[0]
    rows = [r for r in team.splitlines() if r.startswith("| fedavg |") or r.startswith("| flower_fedavg |")]
    assert [r.split(" |")[0] for r in rows] == ["| fedavg", "| flower_fedavg"]
    assert "fedavg - flower_fedavg, teammates" in report


@pytest.mark.slow
@needs_flower
def test_a_failing_simulation_ends_with_its_error_in_the_message(tmp_path):
    cfg = job_config("experiment/ci", TINY, Job("t", "team", "flower_fedavg", 0))
    flower_arm.write_inputs(cfg, 0, tmp_path)
    spec = json.loads((tmp_path / "spec.json").read_text())
    spec["base"] = str(tmp_path / "no-such-base")  # the ServerApp cannot load it
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    with pytest.raises(RuntimeError, match=r"(?s)without result\.json.*no-such-base"):
        flower_arm.launch(flower_arm.flower_python(), tmp_path)
