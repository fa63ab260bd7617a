"""The agent inbox journal (cluster/inbox.py), and an agent taking its documents (agents/workload.py,
cluster/worker.py)."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cluster.inbox import Inbox, InboxFull

TEXTS = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(st.lists(TEXTS, min_size=1, max_size=4), min_size=1, max_size=6),
       consume=st.integers(0, 30), torn=st.integers(0, 30), segment_bytes=st.sampled_from([64, 1 << 20]))
def test_appended_documents_read_back_in_order_across_reopen_torn_tail_and_release(
        tmp_path_factory, batches, consume, torn, segment_bytes):
    d = tmp_path_factory.mktemp("inbox")
    writer = Inbox(d, segment_bytes=segment_bytes)
    sent = []
    for batch in batches:
        receipt = writer.append([(t, "src") for t in batch])
        assert receipt.seqs == list(range(len(sent) + 1, len(sent) + len(batch) + 1))  # numbered without gaps
        assert receipt.nbytes == sum(len(t.encode()) for t in batch)
        sent += batch
    # a crash mid-append: a torn record at the end of the newest segment (never acknowledged)
    newest = sorted(d.glob("segment-*.log"))[-1]
    with open(newest, "ab") as f:
        f.write(os.urandom(torn))
    cursor = min(consume, len(sent))
    reader = Inbox(d)  # another process: the agent
    reader.consumed(cursor)
    reader.release(cursor)  # compaction keeps every document after the durable cursor
    got, at = [], cursor
    while (doc := reader.next_after(at)) is not None:
        got.append(doc.text)
        at = doc.seq
    assert got == sent[cursor:]
    assert reader.depth() == (sum(len(t.encode()) for t in sent[cursor:]), len(sent) - cursor)
    # the next writer cuts the torn tail and continues the numbering
    receipt = Inbox(d, segment_bytes=segment_bytes).append([("after", "")])
    assert receipt.seqs == [len(sent) + 1]
    assert Inbox(d).document(len(sent) + 1).text == "after"


def test_a_full_inbox_refuses_the_whole_batch_and_consuming_makes_room(tmp_path):
    inbox = Inbox(tmp_path, max_bytes=10)
    assert inbox.append([("12345", ""), ("678", "")]).depth == 8
    with pytest.raises(InboxFull) as e:
        inbox.append([("a", ""), ("bcd", "")])  # 8 + 4 > 10: neither goes in
    assert (e.value.depth, e.value.docs, e.value.adding, e.value.limit) == (8, 2, 4, 10)
    assert inbox.last == 2
    Inbox(tmp_path).consumed(1)  # the agent opened document 1
    assert inbox.append([("a", ""), ("bcd", "")]).seqs == [3, 4]
    assert inbox.depth() == (3 + 4, 3)


def test_bad_documents_are_refused_before_anything_is_written(tmp_path):
    inbox = Inbox(tmp_path)
    with pytest.raises(ValueError, match="document 1: 0 bytes"):
        inbox.append([("fine", ""), ("", "")])
    assert inbox.last == 0 and not list(tmp_path.glob("segment-*.log"))


def test_release_deletes_only_segments_every_kept_checkpoint_has_consumed(tmp_path):
    inbox = Inbox(tmp_path, segment_bytes=1)  # one document per segment
    for i in range(5):
        inbox.append([(f"doc {i}", "")])
    assert len(list(tmp_path.glob("segment-*.log"))) == 5
    assert inbox.release(3) == 3  # documents 1..3 are behind every kept checkpoint
    assert Inbox(tmp_path).next_after(3).text == "doc 3"
    with pytest.raises(KeyError):
        Inbox(tmp_path).document(2)


# ---------------------------------------------------------------------- an agent taking its inbox
def _worker(store, steps_per_context=4):
    import dataclasses

    from tests.cluster.test_worker import WORKLOAD, servers, worker

    by_name, topo = servers(store)
    w = worker("a1", by_name, topo, store)
    w.agent.workload.cfg = dataclasses.replace(WORKLOAD, steps_per_context=steps_per_context)
    return w


def test_an_agent_learns_each_document_once_across_a_restart_from_its_checkpoint(tmp_path):
    w = _worker(tmp_path)  # checkpoints every 5 steps (test_worker.RUNTIME), contexts of 4 steps
    inbox = Inbox(w.inbox.dir)
    inbox.write_settings(share=1.0, max_bytes=None)
    docs = [f"document {i}: " + "the quick brown fox " * (i + 3) for i in range(3)]
    inbox.append([(d, "test") for d in docs])
    w.run(7)  # contexts at steps 1 and 5 take documents 1 and 2; the checkpoint at step 5 holds cursor 2
    assert w.record()["inbox"]["cursor"] == 2 and inbox.read_cursor()["consumed"] == 2
    # the process dies: a new worker resumes from the checkpoint at step 5, mid-document 2
    w2 = _worker(tmp_path)
    assert w2.agent.steps == 5 and w2.agent.workload.fed["open"] == 2
    assert w2.agent.workload.step_in_context == 1
    w2.run(10)
    rec = w2.record()["inbox"]
    assert rec["cursor"] == 3 and rec["learned_docs"] == 3
    assert rec["learned_bytes"] == sum(len(d.encode()) for d in docs)
    assert rec["learned_steps"] == 3 * 4  # every document got exactly one context of steps
    assert (rec["depth_bytes"], rec["depth_docs"]) == (0, 0)


def test_share_interleaves_inbox_documents_with_the_workload(tmp_path):
    w = _worker(tmp_path, steps_per_context=1)
    inbox = Inbox(w.inbox.dir)
    inbox.write_settings(share=0.25, max_bytes=None)
    inbox.append([(f"doc {i} " * 20, "") for i in range(10)])
    w.run(20)
    fed = w.agent.workload.fed
    assert fed["docs"] == 5 and fed["steps"] == 5  # one context in four while documents wait
    assert w.agent.workload.context + 1 == 15
