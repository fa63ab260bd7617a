"""The runtime on Ray: servers and agents as actors, killed mid-run (DESIGN section 7)."""

import io
import time

import ray
from rich.console import Console

from swarm.config import load_config
from swarm.run.driver import Run

OVERRIDES = ["workload=synthetic", "pretrain.enabled=false", "levels.rank=8", "model.hidden_size=32",
             "model.intermediate_size=64",
             "model.num_layers=1", "model.num_heads=2", "workload.batch_size=2", "workload.seq_len=32",
             "dynamics.sync.max_interval=2", "server.window=2", "server.checkpoint_every=2", "run.chunk=5",
             "run.checkpoint_every=10", "run.pull_every=2", "run.eval_every=10",
             "run.agent_cpus=0.25"]


def wait_for_new_process(handle, old_pid, timeout=90):
    deadline = time.time() + timeout
    while True:
        try:
            status = ray.get(handle.status.remote(), timeout=30)
            if status["pid"] != old_pid:
                return status
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
            pass
        assert time.time() < deadline, "the actor did not come back"
        time.sleep(0.2)


def test_killed_server_and_agent_come_back_and_the_swarm_carries_on(ray_session, tmp_path):
    cfg = load_config("swarm", [*OVERRIDES, "run.agents_per_host=1"])  # one actor per agent (hosts: test_host_kill)
    with Run.open(cfg, tmp_path / "run", Console(file=io.StringIO())) as run:
        agents = run.agents
        ray.get([h.run.remote(10) for h in agents.values()])  # every agent checkpointed at step 10
        team = run.servers["swarm/red"]
        before = ray.get(team.status.remote())
        assert before["stats"]["accepted"] > 0

        ray.kill(team, no_restart=False)  # pushes in flight are retried by Ray once it is back
        recs = ray.get([h.run.remote(5) for h in agents.values()])  # the agents carry on
        after = wait_for_new_process(team, before["pid"])
        assert after["version"] >= before["version"] and after["stats"]["accepted"] >= before["stats"]["accepted"]
        red = [r for r in recs if "/red/" in r["agent"]]
        assert after["stats"]["accepted"] == sum(r["pushes"] for r in red)  # every acknowledged push is there

        victim_id = "toy/blue/b1"
        victim = agents[victim_id]
        old = ray.get(victim.status.remote())
        assert old["step"] == 15
        ray.kill(victim, no_restart=False)
        others = [h.run.remote(5) for a, h in agents.items() if a != victim_id]
        back = wait_for_new_process(victim, old["pid"])
        assert back["resumed_from"] == 10 and back["step"] == 10  # its own last checkpoint
        assert all(r["step"] == 20 for r in ray.get(others))  # the others never stopped
        rec = ray.get(victim.run.remote(5))
        assert rec["step"] == 15 and rec["versions"]["swarm"] >= 0
        net = ray.get(run.servers["swarm/blue"].status.remote())
        assert net["stats"].get("rejected", {}).get("duplicate seq", 0) == 0  # its seq continued above the server's

