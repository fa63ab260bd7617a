"""``Learn`` end to end: a live small swarm fed over gRPC (swarm/api/learn.py, cluster/inbox.py)."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import sys
import time

import grpc
import pytest
from rich.console import Console

from agents.text import ByteTokenizer, eval_windows
from cluster.inbox import Inbox
from swarm.api.client import Client
from swarm.api.proto import memory_pb2 as pb
from swarm.api.server import MemoryServer
from swarm.api.servicer import build_service
from swarm.config import load_config
from swarm.run.driver import Run
from tests.cluster.test_runtime import OVERRIDES, wait_for_new_process

TOKEN = "s3cret"
LEARN = ["learn.share=1.0", "learn.max_inbox_bytes=4000", "learn.max_document_bytes=1500",
         "cache.step_budget=200", "cache.lr=3e-2",  # internalisation that succeeds on the tiny model
         # ... and levels that move the answer within the test's steps: a fast private level and the rms step
         "agent.lr_agent=1e-3", "server.step=rms", "server.lr=1e-3"]
# a document unlike the synthetic workload: a fixed English paragraph
TEXT = ("The lighthouse keeper counted the ships that passed the northern cape each night, and wrote "
        "their names in a green ledger that smelled of salt and lamp oil. ") * 5
# bits per byte the fed agent must gain on TEXT (sent three times: three contexts of 10 steps), beyond what a
# teammate that was not fed gains in the same 30 steps (measured in-process: 0.22 fed, 0.05 not fed)
MARGIN = 0.05


@pytest.fixture(scope="module")
def swarm(ray_session, tmp_path_factory):
    """A run whose agents stepped 10 times (checkpointed at 10), and the service in front of it."""
    tmp = tmp_path_factory.mktemp("learn")
    cfg = load_config("swarm", [*OVERRIDES, *LEARN, "serve.address=127.0.0.1:0", f"serve.token={TOKEN}"])
    with Run.open(cfg, tmp / "run", Console(file=io.StringIO())) as run:
        import ray

        ray.get([h.run.remote(10) for h in run.agents.values()])
        server = MemoryServer(lambda: build_service(cfg, run.namespace), cfg.serve)
        port = server.start()
        client = Client(f"127.0.0.1:{port}", TOKEN, timeout=60)
        yield run, client, port, cfg
        client.close()
        server.stop()


def learn(client, *docs, **fields):
    return client.learn([pb.LearnRequest(text=t, **fields) for t in docs])


def code_of(fn) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as e:
        fn()
    return e.value.code(), e.value.details()


def record(run, agent):
    import ray

    return ray.get(run.agents[agent].status.remote())


# the loop of DESIGN section 9; first in the module, while a2 has had 10 steps (a later a2 answers blanks to anything)
PROMPT = "The lighthouse keeper "


def test_an_answer_fed_back_through_learn_is_internalised_and_given_again_without_the_cache(swarm):
    """An agent answers (its trajectory cache keeps the answer); its own stream then moves it to another
    answer. The first conversation, fed back through ``Learn`` exactly as the service showed it, makes the
    cached entry due when the agent opens it; the agent internalises it and answers the first answer
    again from its own levels, with no cache entry for its current shared versions."""
    import ray

    run, client, _, cfg = swarm
    agent, handle = "toy/red/a2", run.agents["toy/red/a2"]
    ask = pb.GenerateRequest(prompt=PROMPT, agent=agent, max_new_tokens=12)
    first = client.call("Generate", ask)
    assert len(first.raw) == 12 and first.raw.decode("utf-8", "replace") == first.text  # the exact bytes
    ray.get(handle.run.remote(20))  # its own stream; its pulls change the shared versions the cache is keyed by
    moved = client.call("Generate", ask)
    assert not first.cached and not moved.cached and moved.text != first.text, (first.text, moved.text)
    before = record(run, agent)["cache"]
    learn(client, PROMPT + first.text, agent=agent, source="conversation")
    rec, steps = record(run, agent), 0
    while rec["cache"]["internalised"] + rec["cache"]["failed"] == before["internalised"] + before["failed"]:
        assert steps < 2 * cfg.workload.steps_per_context, rec["cache"]  # it opens the document at a boundary
        rec, steps = ray.get(handle.run.remote(1)), steps + 1
        rec = record(run, agent)
    assert rec["cache"]["confirmed"] == before["confirmed"] + 1, rec["cache"]
    assert rec["cache"]["internalised"] == before["internalised"] + 1, rec["cache"]
    final = client.call("Generate", ask)
    assert not final.cached and final.text == first.text, (first.text, moved.text, final.text)
    deadline = time.time() + 30  # Stats reads the snapshots agents publish
    while (stats := {a.agent: a for a in client.call("Stats", pb.StatsRequest()).agents}).get(agent) is None \
            or stats[agent].confirmed != rec["cache"]["confirmed"]:
        assert time.time() < deadline, stats.get(agent)
        time.sleep(0.3)


def test_acked_text_is_learned_and_lowers_the_agents_bits_per_byte_on_it(swarm):
    import ray

    run, client, _, cfg = swarm
    agent = "toy/red/a1"
    windows = eval_windows([ByteTokenizer().encode_with_bytes(TEXT)], cfg.workload.seq_len, 16)
    handle, control = run.agents[agent], run.agents["toy/red/a2"]
    before, control_before = ray.get([h.evaluate.remote(None, windows) for h in (handle, control)])
    size = len(TEXT.encode())
    reply = learn(client, TEXT, TEXT, TEXT, agent=agent, source="lighthouse.txt")
    (receipt,) = reply.receipts
    assert (receipt.agent, list(receipt.seqs), receipt.bytes) == (agent, [1, 2, 3], 3 * size)
    assert receipt.depth_bytes == 3 * size and receipt.depth_docs == 3 and reply.documents == 3
    ray.get([h.run.remote(30) for h in (handle, control)])  # a1's steps 11..40: the three documents
    after, control_after = ray.get([h.evaluate.remote(None, windows) for h in (handle, control)])
    assert before - after >= (control_before - control_after) + MARGIN, (before, after, control_before, control_after)
    rec = record(run, agent)
    box = rec["inbox"]
    assert (box["cursor"], box["learned_docs"], box["learned_bytes"], box["learned_steps"]) == (3, 3, 3 * size, 30), \
        {k: rec[k] for k in ("step", "resumed_from", "pid", "inbox")}
    assert (box["depth_bytes"], box["depth_docs"]) == (0, 0)
    deadline = time.time() + 30  # Stats reads the snapshots agents publish
    while True:
        inboxes = {i.agent: i for i in client.call("Stats", pb.StatsRequest()).inboxes}
        if agent in inboxes and inboxes[agent].learned_docs == 3:
            break
        assert time.time() < deadline, inboxes
        time.sleep(0.3)


def test_every_bad_request_gets_its_status_code_and_nothing_is_queued(swarm):
    run, client, port, _ = swarm
    agent = "toy/blue/b1"
    inbox = Inbox(record(run, agent)["inbox"]["dir"])
    last = inbox.last
    anonymous = Client(f"127.0.0.1:{port}", None, timeout=30)
    try:
        assert code_of(lambda: learn(anonymous, "hello there", agent=agent))[0] == grpc.StatusCode.UNAUTHENTICATED
    finally:
        anonymous.close()
    code, details = code_of(lambda: learn(client, "hello there", agent="toy/red/nobody"))
    assert code == grpc.StatusCode.NOT_FOUND and "no agent 'toy/red/nobody'" in details
    code, details = code_of(lambda: learn(client, "hello there", team="green"))
    assert code == grpc.StatusCode.NOT_FOUND and "no team 'green'" in details
    code, details = code_of(lambda: learn(client, "", agent=agent))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "document 0 is empty" in details
    code, details = code_of(lambda: learn(client, "fine text", "x" * 1501, agent=agent))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "document 1 has 1501 bytes" in details
    code, details = code_of(lambda: learn(client, "x", agent=agent))  # one byte: one token, nothing to predict
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "at least 2 are needed" in details
    code, details = code_of(lambda: learn(client, "hello there"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "name an agent or a team" in details
    code, details = code_of(lambda: learn(client, "hello there", agent=agent, team="red"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "exactly one" in details
    code, details = code_of(lambda: client.learn([]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "no documents" in details
    assert inbox.last == last  # nothing of any refused stream was queued


def test_a_full_inbox_refuses_the_whole_stream_with_its_depth(swarm):
    run, client, _, _ = swarm
    full, other = "toy/blue/b2", "toy/red/a2"
    boxes = {a: Inbox(record(run, a)["inbox"]["dir"]) for a in (full, other)}
    learn(client, "a" * 1400, "b" * 1400, agent=full)  # 2800 of 4000 bytes
    lasts = {a: b.last for a, b in boxes.items()}
    requests = [pb.LearnRequest(agent=other, text="fits " * 10), pb.LearnRequest(agent=full, text="c" * 1300)]
    code, details = code_of(lambda: client.learn(requests))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"agent {full}'s inbox is full: 2800 unconsumed bytes in 2 documents" in details
    assert {a: b.last for a, b in boxes.items()} == lasts  # not even the document that fitted went in
    code, details = code_of(lambda: learn(client, *["d" * 1000] * 5, agent=other))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "learn.max_inbox_bytes=4000" in details


def test_a_team_gets_documents_round_robin_or_every_member(swarm):
    run, client, _, _ = swarm
    reply = learn(client, "first note for the team", "second note for the team", team="red")
    assert sorted(r.agent for r in reply.receipts) == ["toy/red/a1", "toy/red/a2"]
    reply = learn(client, "a note for everyone", team="red", mode=pb.LEARN_EVERY_MEMBER)
    assert sorted(r.agent for r in reply.receipts) == ["toy/red/a1", "toy/red/a2"] and reply.documents == 2


def test_each_acked_document_is_learned_once_across_sigkills_of_the_agent_process(swarm):
    """SIGKILL right after the ack (before learning), then again while it learns: Ray restarts the actor from
    its checkpoint; the cursor and the counts in its checkpointed state show every document taken once."""
    import ray

    run, client, _, cfg = swarm
    agent = "toy/blue/b1"
    handle = run.agents[agent]
    docs = [f"document {i}: " + "a river of words runs to the sea. " * (5 + i) for i in range(5)]
    reply = learn(client, *docs, agent=agent)
    seqs = list(reply.receipts[0].seqs)
    first = record(run, agent)
    os.kill(first["pid"], signal.SIGKILL)  # acked, not yet read by the agent
    second = wait_for_new_process(handle, first["pid"])
    assert second["resumed_from"] is not None and second["inbox"]["cursor"] == first["inbox"]["cursor"]
    pending = handle.run.remote(60)  # steps 11..60: a context of 10 steps per document
    deadline = time.time() + 120
    while True:  # kill it again once it is learning the second document (the snapshots say so)
        inboxes = {i.agent: i for i in client.call("Stats", pb.StatsRequest()).inboxes}
        if inboxes[agent].cursor >= seqs[1]:
            break
        assert time.time() < deadline, inboxes[agent]
        time.sleep(0.1)
    os.kill(second["pid"], signal.SIGKILL)
    out = ray.get(pending)  # Ray retries the chunk on the restarted actor, which resumed from its checkpoint
    assert out["resumed_from"] > second["resumed_from"]  # killed mid-chunk: resumed from a later checkpoint
    third = record(run, agent)
    assert third["pid"] != second["pid"]
    while third["inbox"]["cursor"] < seqs[-1] or third["inbox"]["learned_steps"] % 10:
        third = ray.get(handle.run.remote(10))
    box = third["inbox"]
    size = sum(len(d.encode()) for d in docs)
    assert box["cursor"] == seqs[-1]
    assert box["learned_docs"] == first["inbox"]["learned_docs"] + len(docs)
    assert box["learned_bytes"] == first["inbox"]["learned_bytes"] + size
    assert box["learned_steps"] == first["inbox"]["learned_steps"] + len(docs) * cfg.workload.steps_per_context
    assert (box["depth_bytes"], box["depth_docs"]) == (0, 0)


# ---------------------------------------------------------------------- a run without an end, fed and stopped
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_a_run_without_an_end_learns_what_swarm_feed_sends_until_swarm_stop(tmp_path):
    import subprocess

    from tests.swarm.run.test_stop import ONE_AGENT, TIMEOUT_S, Driver, swarm

    run_dir, status, port = tmp_path / "r", tmp_path / "r" / "status.json", free_port()
    driver = Driver(["run", "swarm", *ONE_AGENT, *LEARN, "run.steps=null", f"run.out_dir={tmp_path}", "run.name=r",
                     "--serve", f"serve.address=127.0.0.1:{port}", "--quiet"], tmp_path / "run.log")
    try:
        driver.wait_for(status, lambda s: s["state"] == "running" and s["agents"])
        (tmp_path / "note.txt").write_text(TEXT)
        fed = subprocess.run([sys.executable, "-m", "swarm", "feed", "toy/red/a1", str(tmp_path / "note.txt"),
                              "--address", f"127.0.0.1:{port}", "--json"], capture_output=True, text=True,
                             timeout=TIMEOUT_S)
        assert fed.returncode == 0, fed.stderr
        assert json.loads(fed.stdout)["receipts"][0]["seqs"] == [1]
        snap = driver.wait_for(status, lambda s: s["agents"]["toy/red/a1"]["inbox"]["learned_docs"] == 1)
        assert snap["steps"] is None  # no end
        stop = swarm("stop", str(run_dir), "--timeout", str(TIMEOUT_S))
        assert stop.returncode == 0, stop.stdout + stop.stderr
        assert driver.end() == 0, driver.output[-3000:]
    finally:
        driver.kill_session()
    assert json.loads(status.read_text())["state"] == "stopped"
    assert json.loads((run_dir / "summary.json").read_text())["state"] == "stopped"
    newest = sorted((run_dir / "agents" / "toy/red/a1").glob("ckpt-*"))[-1]
    assert json.loads((newest / "manifest.json").read_text())["meta"]["inbox_cursor"] == 1  # checkpointed


class RecordingProbe:
    """The inbox probe's interface, keeping what it was told (the live one exports it; test_inbox_metrics.py)."""

    def __init__(self) -> None:
        self.refused_docs: dict[tuple[str, str], int] = {}

    def refused(self, agent, reason: str, documents: int = 1) -> None:
        key = (agent.id, reason)
        self.refused_docs[key] = self.refused_docs.get(key, 0) + documents


def test_each_refused_stream_is_counted_against_its_agents_by_reason(swarm):
    """Learn tells the probe every document of a refused stream, per agent it was for and the reason;
    refusals that name no agent's fault (an unknown team, an empty stream) are not counted."""
    import asyncio

    from cluster.topology import Topology
    from swarm.api.backends import RayLevels
    from swarm.api.learn import Learner, LearnRefused

    run, _, _, cfg = swarm
    probe = RecordingProbe()
    levels = RayLevels(Topology(cfg.workload, cfg.levels.names[2:]), run.namespace)
    learner = Learner(levels, cfg.learn, ByteTokenizer(), 256, probe)

    async def send(*requests):
        async def stream():
            for r in requests:
                yield r
        with pytest.raises(LearnRefused) as e:
            await learner.learn(stream())
        return e.value.code

    async def main():
        b1, a1 = "toy/blue/b1", "toy/red/a1"
        assert await send(pb.LearnRequest(agent=b1, text="fine text"), pb.LearnRequest(agent=b1, text="")) \
            == grpc.StatusCode.INVALID_ARGUMENT
        assert await send(pb.LearnRequest(agent=a1, text="x" * 1501)) == grpc.StatusCode.INVALID_ARGUMENT
        assert await send(pb.LearnRequest(agent=a1, text="x")) == grpc.StatusCode.INVALID_ARGUMENT
        assert await send(*[pb.LearnRequest(team="red", mode=pb.LEARN_EVERY_MEMBER, text="d" * 1000)] * 5) \
            == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert await send(pb.LearnRequest(team="green", text="hello there")) == grpc.StatusCode.NOT_FOUND

    asyncio.run(main())
    assert probe.refused_docs == {("toy/blue/b1", "empty"): 2, ("toy/red/a1", "too large"): 1,
                                  ("toy/red/a1", "too few tokens"): 1,
                                  ("toy/red/a1", "full"): 5, ("toy/red/a2", "full"): 5}
