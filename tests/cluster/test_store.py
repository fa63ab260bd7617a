import json

import pytest
import torch

from cluster.store import LevelStore, tensors_id


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
