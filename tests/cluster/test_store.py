import json

import pytest
import torch

from cluster.checkpoint import tensors_id
from cluster.frames import frame
from cluster.lineage import read_lineage
from cluster.store import LevelStore
from cluster.wire import encode


def push(i: int) -> dict[str, torch.Tensor]:
    return {"m.q_proj": torch.full((4, 3), float(i)), "m.v_proj": torch.arange(6.0).reshape(2, 3) * i}


class Server:
    """A stand-in level server: state = sum of accepted pushes; checkpoints every 3 pushes."""

    def __init__(self, store: LevelStore):
        self.store = store
        rec = store.recover()
        self.warnings = rec.warnings
        self.state = rec.tensors or {k: torch.zeros_like(v) for k, v in push(0).items()}
        self.version = rec.checkpoint.version if rec.checkpoint else 0
        for tensors, _meta in rec.records:
            self._apply(tensors)

    def _apply(self, tensors):
        for k, v in tensors.items():
            self.state[k] = self.state[k] + v
        self.version += 1

    def accept(self, seq: int):
        tensors = push(seq)
        self.store.append(tensors, {"sender": "agent-0", "seq": seq})  # durable before acknowledging
        self._apply(tensors)
        if self.version % 3 == 0:
            self.store.checkpoint(self.version, self.state, {"note": "periodic"})


def expected(n):
    total = {k: torch.zeros_like(v) for k, v in push(0).items()}
    for i in range(1, n + 1):
        for k, v in push(i).items():
            total[k] += v
    return total


def test_restart_loses_nothing_acknowledged(tmp_path):
    server = Server(LevelStore(tmp_path, config_hash="cfg"))
    for i in range(1, 9):
        server.accept(i)
    again = Server(LevelStore(tmp_path, config_hash="cfg"))
    assert again.version == 8 and not again.warnings
    for k, v in expected(8).items():
        assert torch.equal(again.state[k], v)


def test_torn_tail_is_cut_and_appends_continue(tmp_path):
    store = LevelStore(tmp_path, config_hash="cfg")
    server = Server(store)
    for i in range(1, 6):
        server.accept(i)
    seg = sorted(tmp_path.glob("journal-*.log"))[-1]
    seg.write_bytes(seg.read_bytes() + b"\x00\x00\x01\x00abc")  # a crash mid-append (never acknowledged)
    again = Server(LevelStore(tmp_path, config_hash="cfg"))
    assert again.version == 5 and any("torn record" in w for w in again.warnings)
    again.accept(6)
    third = Server(LevelStore(tmp_path, config_hash="cfg"))
    assert third.version == 6 and not third.warnings
    for k, v in expected(6).items():
        assert torch.equal(third.state[k], v)


def test_corrupt_checkpoint_falls_back_and_replays_everything(tmp_path):
    server = Server(LevelStore(tmp_path, config_hash="cfg"))
    for i in range(1, 8):  # checkpoints at 3 and 6, then one more push
        server.accept(i)
    newest = sorted(tmp_path.glob("ckpt-*"))[-1] / "tensors.safetensors"
    data = bytearray(newest.read_bytes())
    data[-3] ^= 0xFF  # flip bits in the tensor data
    newest.write_bytes(bytes(data))
    again = Server(LevelStore(tmp_path, config_hash="cfg"))
    assert any("corrupt" in w for w in again.warnings)
    assert again.version == 7
    for k, v in expected(7).items():
        assert torch.equal(again.state[k], v)


def test_manifest_lineage_and_id(tmp_path):
    store = LevelStore(tmp_path, config_hash="cfg", keep=3)
    a = store.checkpoint(1, push(1))
    b = store.checkpoint(2, push(2), {"merges": 2})
    assert a.parent is None and b.parent == a.id
    manifest = json.loads((b.path / "manifest.json").read_text())
    assert manifest["id"] == tensors_id(push(2), "cfg") == b.id and manifest["meta"] == {"merges": 2}
    assert tensors_id(push(2), "other") != b.id  # the config is part of the id
    with pytest.raises(ValueError, match="already exists"):
        store.checkpoint(2, push(2))


def test_other_config_is_refused(tmp_path):
    LevelStore(tmp_path, config_hash="cfg").checkpoint(1, push(1))
    with pytest.raises(ValueError, match="config hash 'cfg', this run has 'new'"):
        LevelStore(tmp_path, config_hash="new").recover()


def test_old_checkpoints_and_journals_are_pruned(tmp_path):
    server = Server(LevelStore(tmp_path, config_hash="cfg", keep=2))
    for i in range(1, 13):  # checkpoints at 3, 6, 9, 12
        server.accept(i)
    assert [p.name for p in sorted(tmp_path.glob("ckpt-*"))] == ["ckpt-000000000009", "ckpt-000000000012"]
    assert all(int(p.stem[8:]) >= 9 for p in tmp_path.glob("journal-*.log"))
    (tmp_path / ".tmp-ckpt-000000000099-1").mkdir()  # a checkpoint interrupted before its rename
    assert Server(LevelStore(tmp_path, config_hash="cfg")).version == 12


def test_lineage_lists_pruned_ancestors_with_what_they_saw(tmp_path):
    server = Server(LevelStore(tmp_path, config_hash="cfg", keep=2))
    for i in range(1, 13):  # checkpoints at 3, 6, 9, 12; only 9 and 12 are kept
        server.accept(i)
    lineage = LevelStore(tmp_path, config_hash="cfg").lineage()
    assert [r.version for r in lineage.records] == [3, 6, 9, 12] and lineage.complete and not lineage.warnings
    assert [r.path is not None for r in lineage.records] == [False, False, True, True]
    assert [r.parent for r in lineage.records] == [None] + [r.id for r in lineage.records[:-1]]
    assert [r.records for r in lineage.records] == [3, 6, 9, 12]  # one journal record per push
    one = len(encode(push(1), {"sender": "agent-0", "seq": 1}))
    assert lineage.records[0].bytes == lineage.records[0].journal_bytes == 3 * one
    assert all(r.config_hash == "cfg" and r.projection and r.size > 0 for r in lineage.records)
    newest = json.loads((tmp_path / "ckpt-000000000012" / "manifest.json").read_text())
    assert newest["seen"]["records"] == 12 and newest["projection"] == lineage.records[-1].projection


def test_lineage_survives_a_torn_tail_and_a_crash_before_its_record(tmp_path):
    server = Server(LevelStore(tmp_path, config_hash="cfg", keep=3))
    for i in range(1, 7):  # checkpoints at 3 and 6
        server.accept(i)
    log = tmp_path / "lineage.log"
    records = read_lineage(tmp_path, repair=False)[0]
    log.write_bytes(frame(json.dumps(records[0].to_json()).encode()))  # the record of 6 never made it ...
    log.write_bytes(log.read_bytes() + b"\x00\x00\x00\x40torn")  # ... and a crash tore the next append
    lineage = LevelStore(tmp_path, config_hash="cfg").lineage()
    assert [(r.version, r.recorded) for r in lineage.records] == [(3, True), (6, False)]
    assert any("torn record" in w for w in lineage.warnings)
    for i in range(7, 10):  # the next checkpoint (9) records 6 from its manifest first, then itself
        server.accept(i)
    assert [r.version for r in read_lineage(tmp_path, repair=False)[0]] == [3, 6, 9]
    assert [r.records for r in LevelStore(tmp_path, config_hash="cfg").lineage().records] == [3, 6, 9]


def test_old_store_without_lineage_loads_and_lineage_starts_at_its_oldest_checkpoint(tmp_path):
    server = Server(LevelStore(tmp_path, config_hash="cfg", keep=2))
    for i in range(1, 10):  # checkpoints at 6 and 9 kept
        server.accept(i)
    (tmp_path / "lineage.log").unlink()  # as written before lineage existed ...
    for path in tmp_path.glob("ckpt-*/manifest.json"):  # ... with manifests of that time
        manifest = json.loads(path.read_text())
        path.write_text(json.dumps({k: v for k, v in manifest.items() if k not in ("created", "projection", "seen")}))
    again = Server(LevelStore(tmp_path, config_hash="cfg"))
    assert again.version == 9 and not again.warnings
    lineage = again.store.lineage()
    assert [r.version for r in lineage.records] == [6, 9] and not lineage.complete
    assert any("starts at the oldest kept checkpoint, version 6" in w for w in lineage.warnings)
    assert lineage.records[0].records is None and lineage.records[0].projection is None
    for i in range(10, 13):  # a new checkpoint records the old ones first; counting starts at 9
        again.accept(i)
    lineage = again.store.lineage()
    assert [r.version for r in lineage.records] == [6, 9, 12] and all(r.recorded for r in lineage.records)
    assert (lineage.records[-1].records, lineage.records[-1].counted_from) == (3, 9)
    assert lineage.records[-1].parent == lineage.records[1].id


def test_corrupt_checkpoint_and_journal_are_detected(tmp_path):
    server = Server(LevelStore(tmp_path, config_hash="cfg", keep=2))
    for i in range(1, 8):  # checkpoints at 3 and 6, then a record in journal-6
        server.accept(i)
    store = LevelStore(tmp_path, config_hash="cfg")
    newest = tmp_path / "ckpt-000000000006"
    assert store.check_checkpoint(newest) == [] and store.check_journal() == []
    data = bytearray((newest / "tensors.safetensors").read_bytes())
    data[-3] ^= 0xFF
    (newest / "tensors.safetensors").write_bytes(bytes(data))
    [problem] = store.check_checkpoint(newest)
    assert "ckpt-000000000006/tensors.safetensors: the tensors hash to" in problem and "(corrupt)" in problem
    assert "expected" in LevelStore(tmp_path, config_hash="new").check_checkpoint(tmp_path / "ckpt-000000000003")[0]
    seg = tmp_path / "journal-000000000003.log"
    data = bytearray(seg.read_bytes())
    data[20] ^= 0xFF  # inside the first record's payload
    seg.write_bytes(bytes(data))
    [problem] = store.check_journal()
    assert problem.startswith("journal-000000000003.log: a record with a bad checksum at byte 0")
    assert seg.read_bytes() == bytes(data)  # checking changes nothing
