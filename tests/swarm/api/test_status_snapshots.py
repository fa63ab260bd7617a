"""Fast status: servers and agents publish snapshots, and Stats answers from them while agents train."""

import asyncio
import io

import pytest
import ray
import torch
from rich.console import Console

from cluster.snapshots import SnapshotCache, StatusBoard
from swarm.api.client import Client
from swarm.api.proto import memory_pb2 as pb
from swarm.api.server import MemoryServer
from swarm.api.servicer import build_service
from swarm.config import load_config
from swarm.run.driver import Run
from tests.cluster.test_runtime import OVERRIDES


@pytest.fixture(scope="module")
def live(ray_session, tmp_path_factory):
    """A small run and the query service in front of it."""
    cfg = load_config("swarm", [*OVERRIDES, "serve.address=127.0.0.1:0"])
    with Run.open(cfg, tmp_path_factory.mktemp("snap") / "snapshots-run", Console(file=io.StringIO())) as run:
        server = MemoryServer(lambda: build_service(cfg, run.namespace), cfg.serve)
        port = server.start()
        client = Client(f"127.0.0.1:{port}", timeout=60)
        yield run, client
        client.close()
        server.stop()


def test_stats_answers_while_every_agent_is_inside_a_chunk(live):
    run, client = live
    board = StatusBoard(run.namespace)
    start = {a: s.status["step"] for a, s in board.read().agents.items()}
    assert set(start) == set(run.agents)  # each agent published once it was built
    chunk = 40
    refs = [h.run.remote(chunk) for h in run.agents.values()]
    try:
        mid_chunk: dict[str, int] = {}
        answered_while_busy = 0
        while len(ray.wait(refs, num_returns=len(refs), timeout=0)[0]) < len(refs):
            reply = client.call("Stats", pb.StatsRequest())
            # an actor call to a busy agent waits for its chunk: an answer before any chunk ended used none
            if not ray.wait(refs, num_returns=1, timeout=0)[0]:
                answered_while_busy += 1
                assert {a.agent for a in reply.agents} == set(run.agents)
                assert {x.name for x in reply.levels} == set(run.servers)
            for aid, snap in board.read().agents.items():
                if start[aid] < snap.status["step"] < start[aid] + chunk:
                    mid_chunk[aid] = snap.status["step"]
        assert answered_while_busy > 0
        assert set(mid_chunk) == set(run.agents), f"published from inside the step loop: {mid_chunk}"
    finally:
        ray.get(refs)


def test_a_server_publishes_every_change_before_it_answers(live):
    run, client = live
    board, red = StatusBoard(run.namespace), run.servers["swarm/red"]
    before = board.read().levels["swarm/red"].status
    assert before["version"] == ray.get(red.status.remote())["version"]
    assert not ray.get(red.push.remote("intruder", 1, before["version"], {"nope": torch.zeros(1)})).accepted
    after = board.read().levels["swarm/red"].status  # no wait: published within the push
    refused = lambda st: st["stats"]["rejected"].get("unknown module", 0)  # noqa: E731
    assert refused(after) == refused(before) + 1
    shapes = ray.get(red.info.remote())["shapes"]
    ok = ray.get(red.push.remote("probe", 1, after["version"], {m: torch.zeros(s) for m, s in shapes.items()}))
    assert ok.accepted
    latest = board.read().levels["swarm/red"].status
    assert latest["stats"]["accepted"] == after["stats"]["accepted"] + 1
    truth = ray.get(red.status.remote())
    assert {k: latest[k] for k in ("version", "pending", "stats")} == {k: truth[k] for k in ("version", "pending",
                                                                                            "stats")}


def test_the_cache_is_never_older_than_its_ttl_and_invalidate_reads_anew(ray_session):
    board = StatusBoard("swarm-cache-test")
    board.clear()
    board.publish("agent", "a/b/c", {"n": 1})
    with pytest.raises(ValueError, match="kind must be one of"):
        board.key("team", "x")

    async def scenario():
        held = SnapshotCache(board, ttl_s=3600)  # renewed only after half an hour: what it holds stays
        fresh = SnapshotCache(board, ttl_s=0)
        first = (await held.get()).agents["a/b/c"]
        board.publish("agent", "a/b/c", {"n": 2})
        kept = (await held.get()).agents["a/b/c"].status["n"]
        now = (await fresh.get()).agents["a/b/c"].status["n"]
        held.invalidate()
        renewed = (await held.get()).agents["a/b/c"].status["n"]
        return first, kept, now, renewed

    first, kept, now, renewed = asyncio.run(scenario())
    assert (first.status["n"], kept, now, renewed) == (1, 1, 2, 2)
    assert 0 <= first.age_s() < 3600
    assert board.clear() == 1 and not board.read().agents
