"""cluster.storage and cluster.store on a real S3-compatible server (moto's, on loopback, through s3fs):
a level store round-trips, a torn (uncommitted) checkpoint is ignored on reopen and replaced, journal
segments are objects read in order, options travel with a location."""

from __future__ import annotations

import pytest
import torch

from cluster.frames import FrameLog
from cluster.storage import Storage, split_options, with_options
from cluster.store import COMMIT, LevelStore
from tests.cluster.s3_server import s3_url
from tests.cluster.test_store import Server, expected, push


def test_level_store_round_trips_on_s3(s3):
    store = LevelStore(s3_url("round"), config_hash="h")
    server = Server(store)
    for seq in range(1, 8):  # checkpoints at versions 3 and 6, one record journaled after
        server.accept(seq)
    assert not store.local and str(store.dir).startswith("s3://")
    again = Server(LevelStore(s3_url("round"), config_hash="h"))
    assert again.version == 7 and again.warnings == []
    for k, v in expected(7).items():
        assert torch.equal(again.state[k], v)
    names = Storage(s3_url("round")).listing()
    assert {"ckpt-000000000003", "ckpt-000000000006", "journal-000000000006.log", "lineage.log"} <= set(names)
    assert "journal-000000000000.log" not in names  # pruned with the checkpoints before version 3
    assert [r.version for r in store.lineage().records] == [3, 6]
    assert store.check_journal() == [] and store.check_checkpoint(store.latest_valid().path) == []


def test_uncommitted_checkpoint_is_ignored_on_reopen_and_rewritten(s3):
    store = LevelStore(s3_url("torn"), config_hash="h")
    server = Server(store)
    for seq in range(1, 5):  # checkpoint at 3, one record after
        server.accept(seq)
    raw = Storage(s3_url("torn"))
    # a crash in the middle of writing the checkpoint at version 5: its objects but no commit marker
    raw.write_bytes("ckpt-000000000005/tensors.safetensors", b"half a file")
    raw.write_bytes("ckpt-000000000005/manifest.json", b'{"id": "x", "version": 5')
    assert not raw.exists(f"ckpt-000000000005/{COMMIT}")
    reopened = LevelStore(s3_url("torn"), config_hash="h")
    again = Server(reopened)
    assert again.version == 4 and again.warnings == []  # the torn one is not even looked at
    assert reopened.latest_valid().version == 3
    again.accept(5)  # version 5: no checkpoint (every 3) ... then the one at 6 is written whole
    again.accept(6)
    assert reopened.latest_valid().version == 6
    final = Server(LevelStore(s3_url("torn"), config_hash="h"))
    assert final.version == 6 and torch.equal(final.state["m.q_proj"], expected(6)["m.q_proj"])


def test_a_checkpoint_written_over_a_torn_one_of_the_same_version_is_complete(s3):
    raw = Storage(s3_url("over"))
    raw.write_bytes("ckpt-000000000001/stale.bin", b"left by a crashed writer")
    store = LevelStore(s3_url("over"), config_hash="h")
    ckpt = store.checkpoint(1, push(1), {"note": "x"})
    assert set(raw.listing(ckpt.path.name)) == {"tensors.safetensors", "manifest.json", COMMIT}
    assert store.recover().checkpoint.version == 1


def test_journal_segments_are_objects_read_in_order_and_a_bad_tail_is_cut(s3):
    store = LevelStore(s3_url("segments"), config_hash="h")
    for seq in range(1, 4):
        store.append(push(seq), {"sender": "a", "seq": seq})
    log = Storage(s3_url("segments")).listing("journal-000000000000.log")
    assert sorted(log) == ["000000000001.rec", "000000000002.rec", "000000000003.rec"]
    # a fourth object that is not a record (a foreign writer, bit rot): recovery cuts it, never acked
    Storage(s3_url("segments")).write_bytes("journal-000000000000.log/000000000004.rec", b"\x00\x00\x00\x09garbage")
    rec = LevelStore(s3_url("segments"), config_hash="h").recover()
    assert [m["seq"] for _, m in rec.records] == [1, 2, 3] and "cut off" in rec.warnings[0]
    assert len(Storage(s3_url("segments")).listing("journal-000000000000.log")) == 3
    fresh = LevelStore(s3_url("segments"), config_hash="h")
    fresh.append(push(4), {"sender": "a", "seq": 4})  # numbering continues after what is there
    assert [m["seq"] for _, m in fresh.recover().records] == [1, 2, 3, 4]


def test_options_travel_with_a_location(s3):
    url = with_options(s3_url("opts"), {"endpoint_url": s3["AWS_ENDPOINT_URL"], "anon": False})
    assert split_options(url) == (s3_url("opts"), {"anon": False, "endpoint_url": s3["AWS_ENDPOINT_URL"]})
    assert with_options("/a/local/path", {"x": 1}) == "/a/local/path"
    storage = Storage(url)
    FrameLog(storage, "log").append(b"abc")
    assert FrameLog(Storage(url), "log").read() == b"abc"
    with pytest.raises(ValueError, match="storage location s3://b/x: option k='not json' is not JSON"):
        split_options("s3://b/x?k=not json")
