"""The agent inbox on an object store (cluster/inbox.py over cluster/storage.py), on a real S3-compatible
server (moto's, on loopback, through s3fs): one segment object per append claimed by a conditional put,
racing writers that never overwrite an acknowledged document nor pass the depth limit, compaction, an
agent learning each document once across a restart from its S3 checkpoint, and the refusals."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import pytest

from cluster.inbox import Inbox, InboxFull, InboxUnsupported, inbox_location
from cluster.storage import Storage
from tests.cluster.s3_server import s3_url


def _segments(url: str) -> list[str]:
    return sorted(n for n in Storage(url).listing() if n.startswith("segment-"))


def test_appends_are_segment_objects_read_back_in_order(s3):
    writer = Inbox(s3_url("order/inbox"))
    assert not writer.local and writer.location == s3_url("order/inbox")
    first = writer.append([("one", "a"), ("two", "b")])
    second = Inbox(s3_url("order/inbox")).append([("three", "c")])  # another writer, its own view
    assert (first.seqs, second.seqs) == ([1, 2], [3])
    assert (second.depth, second.depth_docs) == (len("onetwothree"), 3)
    assert _segments(s3_url("order/inbox")) == ["segment-000000000001.log", "segment-000000000003.log"]
    reader = Inbox(s3_url("order/inbox"))  # the agent
    assert [reader.next_after(i).text for i in range(3)] == ["one", "two", "three"]
    assert reader.next_after(3) is None and reader.document(2).source == "b"
    reader.consumed(2)
    assert writer.depth() == (len("three"), 1)  # measured from the mirrored cursor
    writer.write_settings(share=0.5, max_bytes=None)
    assert Inbox(s3_url("order/inbox")).share == 0.5


def test_compaction_deletes_only_what_every_kept_checkpoint_consumed(s3):
    url = s3_url("compact/inbox")
    inbox = Inbox(url)
    for i in range(1, 6):
        inbox.append([(f"doc {i}", "")])
    assert inbox.release(0) == 0 and len(_segments(url)) == 5
    assert inbox.release(3) == 3  # documents 1..3 are in every kept checkpoint's past
    assert _segments(url) == ["segment-000000000004.log", "segment-000000000005.log"]
    assert inbox.release(99) == 1  # never the last segment: the next number comes from it
    assert _segments(url) == ["segment-000000000005.log"]
    fresh = Inbox(url)
    assert fresh.last == 5 and fresh.append([("doc 6", "")]).seqs == [6]
    with pytest.raises(KeyError, match="no document 2"):
        fresh.document(2)
    assert fresh.read_cursor() == {"consumed": 0, "durable": 99}


class _Race:
    """A fault for Storage.inject: before this writer's first segment put, ``other`` appends (it wins
    the number this writer is about to claim); every later put goes through."""

    def __init__(self, other: Inbox, texts: list[tuple[str, str]]) -> None:
        self.other, self.texts, self.done = other, texts, False

    def __call__(self, op: str, name: str) -> None:
        if op == "create" and not self.done:
            self.done = True
            self.other.append(self.texts)


def test_a_writer_that_loses_the_race_takes_the_next_number(s3):
    url = s3_url("race/inbox")
    a, b = Inbox(url), Inbox(url)
    b.storage.inject(_Race(a, [("from a", "")]))
    receipt = b.append([("from b", "")])  # its put of segment 1 fails: a holds it now
    assert receipt.seqs == [2]
    reader = Inbox(url)
    assert [reader.document(1).text, reader.document(2).text] == ["from a", "from b"]
    assert _segments(url) == ["segment-000000000001.log", "segment-000000000002.log"]


def test_the_loser_checks_the_depth_again_against_what_the_winner_queued(s3):
    url = s3_url("race-full/inbox")
    a, b = Inbox(url, max_bytes=10), Inbox(url, max_bytes=10)
    b.storage.inject(_Race(a, [("x" * 8, "")]))
    with pytest.raises(InboxFull, match="8 unconsumed bytes in 1 documents, adding 5 bytes"):
        b.append([("y" * 5, "")])  # had room when it looked, not once a's batch was in
    assert Inbox(url).depth() == (8, 1) and _segments(url) == ["segment-000000000001.log"]


def test_concurrent_writers_queue_every_document_once_without_gaps(s3):
    url = s3_url("threads/inbox")
    sent: dict[str, list[int]] = {}
    errors: list[BaseException] = []

    def write(name: str) -> None:
        inbox = Inbox(url)  # each thread a writer of its own, as two query services would be
        try:
            for i in range(12):
                sent[f"{name}{i}"] = inbox.append([(f"{name}{i}", name)]).seqs
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=write, args=(n,)) for n in ("p", "q", "r")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    reader = Inbox(url)
    assert reader.last == 36
    texts = [reader.document(seq).text for seq in range(1, 37)]
    assert sorted(texts) == sorted(sent) and len(set(texts)) == 36  # each once, none overwritten
    assert all(texts[seqs[0] - 1] == text for text, seqs in sent.items())  # the receipt names its document


def test_a_uri_collapsed_into_a_path_is_refused_naming_it(s3):
    with pytest.raises(ValueError, match="inbox location s3:/swarm-test/x/inbox: a URI turned into a path"):
        Inbox(Path(s3_url("x/inbox")))


def test_a_store_without_a_conditional_put_refuses_appends_naming_it(tmp_path):
    inbox = Inbox(f"local://{tmp_path}/inbox")  # fsspec's local filesystem: no conditional put known
    with pytest.raises(InboxUnsupported, match=f"inbox local://{tmp_path}/inbox: its filesystem offers no"):
        inbox.append([("text", "")])
    assert inbox.last == 0 and inbox.next_after(0) is None  # reading works; nothing was queued


def test_inbox_location_keeps_the_store_options():
    assert inbox_location("s3://b/run/agents/x?endpoint_url=%22http%3A//h%3A1%22") == \
        "s3://b/run/agents/x/inbox?endpoint_url=%22http%3A%2F%2Fh%3A1%22"
    assert inbox_location(Path("/runs/r/agents/x")) == Path("/runs/r/agents/x/inbox")


# ---------------------------------------------------------------------- an agent whose store is on S3
def _worker(store: str):
    from agents.agent import Agent
    from agents.topology import agent_specs
    from cluster.worker import AgentWorker
    from tests.cluster.test_worker import DYN, LEVELS, MODEL, RUNTIME, WORKLOAD, servers

    cfg = dataclasses.replace(WORKLOAD, steps_per_context=4)
    by_name, topo = servers()
    spec = next(s for s in agent_specs(cfg) if s.name == "a1")
    agent = Agent(spec, model=MODEL, levels=LEVELS, workload=cfg, dynamics=DYN)
    routes = {lvl: by_name[n] for lvl, n in topo.route(spec.id).items()}
    return AgentWorker(agent, routes, RUNTIME, store_dir=store, config_hash="h")


@pytest.mark.parametrize("kind", ["s3", "local"])
def test_an_agent_learns_each_document_once_across_a_restart(s3, tmp_path, kind):
    """Also a regression (both kinds): compaction used to delete the segment of the document a kept
    checkpoint had open, which its resume then failed to reopen."""
    store = s3_url("agent/agents/toy/red/a1") if kind == "s3" else str(tmp_path / "a1")
    # settings first: an agent on an object store reads them again only every SETTINGS_TTL_S
    Inbox(inbox_location(store)).write_settings(share=1.0, max_bytes=None)
    w = _worker(store)  # checkpoints every 5 steps (test_worker.RUNTIME), contexts of 4 steps
    where = w.record()["inbox"]["dir"]
    assert where == f"{store}/inbox" and Storage(where).local == (kind == "local")
    inbox = Inbox(where, segment_bytes=1)  # the query service opens it from the published record
    docs = [f"document {i}: " + "the quick brown fox " * (i + 3) for i in range(3)]
    for d in docs:  # a segment each
        inbox.append([(d, "test")])
    w.run(7)  # contexts at steps 1 and 5 take documents 1 and 2; the checkpoint at step 5 holds cursor 2
    assert w.record()["inbox"]["cursor"] == 2 and inbox.read_cursor() == {"consumed": 2, "durable": 1}
    # document 2 is open in the checkpoint: a resume reopens it, so its segment stays
    assert _segments(where) == ["segment-000000000002.log", "segment-000000000003.log"]
    w2 = _worker(store)  # the process died: resume from the checkpoint, mid-document 2
    assert w2.agent.steps == 5 and w2.agent.workload.fed["open"] == 2
    w2.run(10)  # document 3 opens at step 9: open in the checkpoint at 10, done with at 15
    rec = w2.record()["inbox"]
    assert rec["cursor"] == 3 and rec["learned_docs"] == 3 and rec["learned_steps"] == 3 * 4
    assert rec["learned_bytes"] == sum(len(d.encode()) for d in docs)
    assert (rec["depth_bytes"], rec["depth_docs"]) == (0, 0)
    assert Inbox(where).read_cursor()["durable"] == 2
    assert _segments(where) == ["segment-000000000003.log"]  # never the last one
    assert not Path("s3:").exists()  # nothing went to a local directory named after the scheme
