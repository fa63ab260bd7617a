"""The inbox series on Ray's Prometheus endpoint (cluster/metrics.py): an agent worker with a live probe
(in this process, on the test session's Ray) fed documents, scraped like Prometheus would; a restarted
agent process counting from the cursor it resumed at; refusals by reason from a Learn writer's probe."""

from __future__ import annotations

import time
import uuid

import pytest

from cluster.inbox import DocumentRefused, Inbox, InboxFull
from cluster.metrics import LiveAgentProbe, LiveInboxProbe, inbox_probe
from cluster.snapshots import StatusBoard
from tests.cluster.test_inbox import _worker
from tests.cluster.test_metrics import scrape, value

SERIES = {"depth_docs": "ray_swarm_inbox_depth_documents", "depth_bytes": "ray_swarm_inbox_depth_bytes",
          "acked_docs": "ray_swarm_inbox_acked_documents_total", "acked_bytes": "ray_swarm_inbox_acked_bytes_total",
          "learned_docs": "ray_swarm_inbox_learned_documents_total",
          "learned_bytes": "ray_swarm_inbox_learned_bytes_total"}


def _port(ray) -> int:
    ports = {n["MetricsExportPort"] for n in ray.nodes() if n.get("Alive")}
    assert len(ports) == 1, f"one local node expected, got metrics ports {ports}"
    return ports.pop()


def _wait_for(port: int, want: dict[str, float], **labels) -> dict[str, float]:
    """The inbox series of ``labels`` once they read ``want`` (Ray exports every few seconds), or as they
    are after two minutes."""
    deadline = time.time() + 120
    while True:
        samples = scrape(port)
        got = {k: value(samples, name, **labels) for k, name in SERIES.items()}
        if got == want or time.time() > deadline:
            return got
        time.sleep(1)


def _probe(w, run: str) -> LiveAgentProbe:
    probe = LiveAgentProbe(w.agent.spec, StatusBoard(run))
    w.probe = probe
    return probe


def test_an_agent_exports_its_inbox_depth_and_what_was_acked_and_learned(ray_session, tmp_path):
    port, run = _port(ray_session), f"inbox-metrics-{uuid.uuid4().hex[:8]}"
    w = _worker(tmp_path, steps_per_context=1)  # checkpoints every 5 steps
    _probe(w, run)
    writer = Inbox(w.inbox.location)  # the query service's view
    writer.write_settings(share=0.5, max_bytes=None)
    docs = [f"document {i} " + "lorem ipsum " * (i + 2) for i in range(4)]
    size = [len(d.encode()) for d in docs]
    writer.append([(d, "") for d in docs])
    w.run(5)  # a document every second context: 2 learned, the checkpoint at step 5 holds cursor 2
    fed = w.agent.workload.fed
    assert fed["docs"] == 2 and fed["open"] == 0  # step 5 is a workload context
    w.probe.publish(w)
    labels = {"run": run, "agent": w.id}
    want = {"depth_docs": 2, "depth_bytes": size[2] + size[3], "acked_docs": 4, "acked_bytes": sum(size),
            "learned_docs": 2, "learned_bytes": size[0] + size[1]}
    assert _wait_for(port, want, **labels) == want

    writer.append([("one more document", "")])  # queued by another process: shows at the next publish
    w.probe.publish(w)
    want = {**want, "depth_docs": 3, "depth_bytes": want["depth_bytes"] + 17, "acked_docs": 5,
            "acked_bytes": want["acked_bytes"] + 17}
    assert _wait_for(port, want, **labels) == want

    # a new agent process resumes from the checkpoint at step 5 (cursor 2): its counters start there
    w2 = _worker(tmp_path, steps_per_context=1)
    assert w2.inbox_start == {"docs": 2, "bytes": size[0] + size[1]}
    run2 = f"{run}-2"
    _probe(w2, run2)
    w2.run(4)  # steps 6..9 take documents 3 and 4
    w2.probe.publish(w2)
    assert w2.agent.workload.fed["docs"] == 4
    want2 = {"depth_docs": 1, "depth_bytes": 17, "acked_docs": 3, "acked_bytes": size[2] + size[3] + 17,
             "learned_docs": 2, "learned_bytes": size[2] + size[3]}
    got = _wait_for(port, want2, run=run2, agent=w2.id)
    assert got == want2
    for kind in ("docs", "bytes"):  # documents are numbered without gaps and learned in order
        assert got[f"acked_{kind}"] - got[f"learned_{kind}"] == got[f"depth_{kind}"]


def test_refusals_are_counted_by_reason_for_the_agent(ray_session, tmp_path):
    port, run = _port(ray_session), f"inbox-refusals-{uuid.uuid4().hex[:8]}"
    probe = inbox_probe(run)
    assert isinstance(probe, LiveInboxProbe)  # Ray runs in this process
    w = _worker(tmp_path)
    spec = w.agent.spec
    inbox = Inbox(w.inbox.location, max_bytes=20)
    inbox.append([("x" * 15, "")])
    refused = {}
    for batch in ([("y" * 10, ""), ("z", "")], [("", "")], [("ok", ""), ("w" * (1 << 20 | 1), "")]):
        with pytest.raises((InboxFull, DocumentRefused)) as e:
            inbox.append(batch)
        probe.refused(spec, e.value.reason, len(batch))  # what the Learn writer does with a refusal
        refused[e.value.reason] = refused.get(e.value.reason, 0) + len(batch)
    assert refused == {"full": 2, "empty": 1, "too large": 2}
    assert inbox.depth() == (15, 1)  # nothing of a refused batch was queued
    deadline = time.time() + 120
    while True:
        samples = scrape(port)
        got = {r: value(samples, "ray_swarm_inbox_refusals_total", run=run, agent=spec.id, team=spec.swarm,
                        domain=spec.domain, reason=r) for r in refused}
        if got == refused or time.time() > deadline:
            break
        time.sleep(1)
    assert got == refused
