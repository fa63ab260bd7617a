"""A finished run stays queryable: the service over its checkpoints (no Ray actors), read-only."""

import hashlib
import io
import json

import grpc
import pytest
import torch
from rich.console import Console

from swarm.api.client import Client
from swarm.api.proto import memory_pb2 as pb
from swarm.api.server import MemoryServer
from swarm.api.servicer import build_service
from swarm.config import load_config, to_yaml
from swarm.run.driver import Run
from swarm.rundir import RunDir
from tests.cluster.test_runtime import OVERRIDES


def _digest(path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(ray_session, tmp_path_factory):
    """A run that learned for 10 steps and finished (actors gone), what its servers held at the end, and
    the read-only service over its checkpoints."""
    import ray

    tmp = tmp_path_factory.mktemp("offline")
    cfg = load_config("swarm", [*OVERRIDES, "serve.address=127.0.0.1:0", "serve.max_new_tokens=32"])
    run_dir = tmp / "run"
    run_dir.mkdir()
    RunDir(run_dir).config.write_text(to_yaml(cfg))  # what `swarm run` writes first
    with Run.open(cfg, run_dir, Console(file=io.StringIO())) as run:
        ray.get([h.run.remote(10) for h in run.agents.values()])
        run.finish(True)
        final = {n: ray.get(h.pull.remote(-1)) for n, h in run.servers.items()}
        merges = {n: ray.get(h.status.remote())["stats"]["merges"] for n, h in run.servers.items()}
    before = _digest(run_dir)
    server = MemoryServer(lambda: build_service(cfg, run_dir=run_dir), cfg.serve)
    port = server.start()
    client = Client(f"127.0.0.1:{port}", timeout=60)
    yield run_dir, client, final, merges, before
    client.close()
    server.stop()


def test_levels_and_tensors_are_those_the_run_ended_with(finished):
    run_dir, client, final, _, _ = finished
    levels = {x.name: x.version for x in client.call("ListLevels", pb.ListLevelsRequest()).levels}
    assert levels == {n: f["version"] for n, f in final.items()}
    assert max(levels.values()) > 0  # the run learned something to serve
    for name, truth in final.items():
        version, tensors = client.level(name)
        assert version == truth["version"]
        assert all(torch.equal(tensors[m], truth["tensors"][m]) for m in truth["tensors"])


def test_stats_come_from_the_last_status_and_watch_says_there_is_nothing(finished):
    run_dir, client, _, merges, _ = finished
    status = RunDir(run_dir).read_status()
    assert status["state"] == "finished"
    stats = {x.name: x for x in client.call("Stats", pb.StatsRequest()).levels}
    assert {n: s.merges for n, s in stats.items()} == merges
    assert {n: s.accepted for n, s in stats.items()} == {n: st["stats"]["accepted"]
                                                         for n, st in status["servers"].items()}
    with pytest.raises(grpc.RpcError) as e:
        next(iter(client.call("Watch", pb.WatchRequest(), timeout=10)))
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "finished" in e.value.details()


def test_generate_and_score_default_to_the_best_trained_chain(finished):
    _, client, final, merges, _ = finished
    teams = {n: m for n, m in merges.items() if n.startswith("swarm/")}
    best = max(sorted(teams), key=teams.__getitem__)
    g = client.call("Generate", pb.GenerateRequest(prompt="ab", max_new_tokens=4))
    assert set(g.versions) == {best, "domain/toy", "foundation"} and "best-trained" in g.basis
    assert dict(g.versions) == {n: final[n]["version"] for n in g.versions}
    s = client.call("Score", pb.ScoreRequest(text="abcabc abcabc", agent="toy/blue/b1"))
    assert set(s.versions) == {"swarm/blue", "domain/toy", "foundation"} and "toy/blue/b1" in s.basis
    answer = client.call("Generate", pb.GenerateRequest(prompt="ab", agent="toy/blue/b1", max_new_tokens=4))
    assert "not running" in answer.basis and "swarm/blue" in answer.versions  # no actor: its team's levels
    with pytest.raises(grpc.RpcError) as e:
        client.call("Generate", pb.GenerateRequest(prompt="ab", levels=["swarm/red", "swarm/blue"], max_new_tokens=4))
    assert "--levels" in e.value.details()


def test_the_export_names_its_base_and_says_how_to_load_it(finished, tmp_path):
    _, client, _, _, _ = finished
    files = client.export("swarm/red", tmp_path / "ad")
    assert {p.name for p in files} == {"adapter_config.json", "adapter_model.safetensors", "README.md"}
    config = json.loads((tmp_path / "ad" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] is None  # a config-built base: no directory to name ...
    assert "build_model" in (tmp_path / "ad" / "README.md").read_text()  # ... so the README says how


def test_serving_leaves_the_run_directory_untouched(finished):
    run_dir, client, _, _, before = finished
    client.call("Stats", pb.StatsRequest())
    assert _digest(run_dir) == before


def test_swarm_serve_on_a_finished_run_says_so_and_answers(finished):
    """The command itself: no Ray to join, the run finished: it says it serves the checkpoints, then does;
    Ctrl-C stops it even when it was started with SIGINT ignored (as from a script in the background)."""
    import os
    import signal
    import subprocess
    import sys

    run_dir = finished[0]
    env = {**os.environ, "RAY_ADDRESS": ""}  # not even a cluster to find
    proc = subprocess.Popen([sys.executable, "-m", "swarm", "serve", str(run_dir), "--address", "127.0.0.1:0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        said = [proc.stdout.readline(), proc.stdout.readline()]
        assert "finished: serving it read-only from its checkpoints" in said[0], said
        assert said[1].startswith("serving ") and "Ctrl-C stops" in said[1], said
        port = int(said[1].split(" on ")[1].split(";")[0].rpartition(":")[2])
        client = Client(f"127.0.0.1:{port}", timeout=60)
        assert {x.name for x in client.call("Stats", pb.StatsRequest()).levels} == set(finished[3])
        client.close()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    assert proc.returncode == 0
