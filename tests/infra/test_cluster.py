"""Cluster configs (validated by Ray's own schema) and a real multi-node Ray cluster on this machine."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray
import yaml
from packaging.version import Version

from swarm.tools import onebox
from tests.cluster.test_runtime import OVERRIDES

ROOT = Path(__file__).resolve().parents[2]
RAY_RANGE = (Version("2.40"), Version("3"))  # the Ray versions whose cluster schema this test checks against


@pytest.mark.parametrize("name", ["cluster.yaml", "cluster.local.yaml"])
def test_cluster_yamls_pass_rays_own_validation(name):
    from ray.autoscaler._private.util import prepare_config, validate_config

    assert RAY_RANGE[0] <= Version(ray.__version__) < RAY_RANGE[1], ray.__version__
    config = yaml.safe_load((ROOT / "infra" / name).read_text())
    validate_config(prepare_config(config))  # raises on any schema violation
    commands = " ".join(config["head_start_ray_commands"])
    assert '"swarm_head": 1' in commands and "swarm serve" in commands  # servers' resource, query service
    broken = yaml.safe_load((ROOT / "infra" / name).read_text())
    broken["bogus_field"] = 1  # an unknown top-level key
    with pytest.raises(Exception, match="bogus_field"):
        validate_config(prepare_config(broken))


def test_onebox_config_loads_and_refuses_unknown_keys(tmp_path):
    cfg = onebox.load(ROOT / "infra" / "onebox.yaml")
    assert cfg.head_resources == {"swarm_head": 1} and len(cfg.workers) >= 2
    (tmp_path / "bad.yaml").write_text("workerz: [1]\n")
    with pytest.raises(ValueError, match="unknown key 'workerz'"):
        onebox.load(tmp_path / "bad.yaml")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def swarm(*args, **kw):
    return [sys.executable, "-m", "swarm", *args]


def test_a_swarm_spans_the_nodes_of_a_one_machine_cluster_and_answers_queries(tmp_path):
    port, grpc_port = free_port(), free_port()
    box = tmp_path / "box.yaml"
    temp_dir = f"/tmp/sw-{os.getpid()}"
    box.write_text(yaml.safe_dump({"temp_dir": temp_dir, "port": port, "workers": [1, 1]}))
    cfg = onebox.load(box)
    env = {**os.environ, "RAY_ADDRESS": cfg.address, "RAY_AUTH_MODE": "disabled"}
    started: list[subprocess.Popen] = []
    try:
        up = subprocess.run(swarm("cluster", "up", str(box)), capture_output=True, text=True, timeout=180)
        assert up.returncode == 0, up.stderr
        nodes = json.loads(subprocess.run(
            [sys.executable, "-c", "import json, ray; ray.init(log_to_driver=False); "
             "print(json.dumps([(n['NodeID'], 'swarm_head' in n['Resources']) for n in ray.nodes() if n['Alive']]))"],
            env=env, capture_output=True, text=True, timeout=120).stdout.strip().splitlines()[-1])
        assert len(nodes) == 3
        head = next(node for node, is_head in nodes if is_head)

        serve = subprocess.Popen(swarm("serve", str(tmp_path / "runs"), "--follow", "--address",
                                       f"127.0.0.1:{grpc_port}"), env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True, start_new_session=True)
        started.append(serve)
        run = subprocess.Popen(swarm("run", "swarm", *OVERRIDES, "run.steps=100000", "run.chunk=2",
                                     f"run.out_dir={tmp_path / 'runs'}", "run.name=r", "--quiet"),
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        started.append(run)
        status = tmp_path / "runs" / "r" / "status.json"
        deadline = time.time() + 240
        answer = None
        while answer is None:  # the query service on the head answers from outside the Ray job
            assert run.poll() is None and time.time() < deadline, run.stdout.read() if run.poll() else "timeout"
            if status.is_file() and json.loads(status.read_text())["state"] == "running":
                q = subprocess.run(swarm("query", "--address", f"127.0.0.1:{grpc_port}", "--json", "stats"),
                                   capture_output=True, text=True, timeout=60)
                if q.returncode == 0:
                    answer = json.loads(q.stdout)
            time.sleep(1)
        assert {x["name"] for x in answer["levels"]} == {"foundation", "domain/toy", "swarm/red", "swarm/blue"}
        run.send_signal(signal.SIGINT)
        out, _ = run.communicate(timeout=180)
        assert run.returncode == 130, out
        snap = json.loads(status.read_text())
        agent_nodes = {r["node"] for r in snap["agents"].values()}
        assert len(agent_nodes) >= 2, agent_nodes  # the agents ran on at least two Ray nodes
        assert {s["node"] for s in snap["servers"].values()} == {head}  # the level servers sit on the head
    finally:
        for p in started:  # only what this test started
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
        down = subprocess.run(swarm("cluster", "down", str(box)), capture_output=True, text=True, timeout=120)
    assert down.returncode == 0 and not onebox.processes(cfg)
