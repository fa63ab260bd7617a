"""Exactly once: a push's step interval, its admission, its journal form, and forwarding after a restart."""

import pytest
import torch

from cluster.config import ServerConfig
from cluster.level.core import LevelCore
from cluster.level.forwarding import LinkedLevel
from cluster.level.protocol import Coverage, RejectCode
from cluster.level.records import FlushRecord, PushRecord, audit, from_journal
from cluster.store import LevelStore

SHAPES = {"m.q": (8, 4), "m.v": (6, 4)}


def grad(seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {m: torch.ones(s) + 0.3 * torch.randn(s, generator=gen) for m, s in SHAPES.items()}


def test_an_interval_overlapping_what_the_level_holds_is_refused_whatever_its_seq():
    server = LevelCore("swarm/red", SHAPES, server=ServerConfig(window=2))
    assert server.push("a", 1, 0, grad(1), 1, 3).accepted
    assert server.push("a", 2, 0, grad(2), 4, 6).accepted
    before = (server.version, server.pending, server.status().counters.accepted)
    out = server.push("a", 3, server.version, grad(3), 5, 8)  # a new seq, but steps 5-6 are held
    assert out.code is RejectCode.OVERLAP
    assert out.reason == "interval overlap: steps 5..8 from 'a' overlap the steps through 6 already held"
    assert server.push("a", 4, server.version, grad(3), 6, 6).code is RejectCode.OVERLAP  # the last step alone
    assert (server.version, server.pending, server.status().counters.accepted) == before  # nothing changed
    assert server.status().counters.rejected == {"interval overlap": 2}
    assert server.push("a", 5, server.version, grad(4), 7, 9).accepted  # the next steps are welcome
    assert server.push("b", 1, server.version, grad(5), 1, 2).accepted  # intervals are per sender
    assert server.covered("a") == Coverage(last=9, pushes=3, steps=9)
    assert server.covered("b") == Coverage(2, 1, 2) and server.covered("nobody") == Coverage()


@pytest.mark.parametrize("first, last", [(0, 3), (4, 3), (None, 3), (2, None), (1.0, 2), (True, 2), ("1", 2)])
def test_a_malformed_interval_is_refused_by_name(first, last):
    server = LevelCore("swarm/red", SHAPES)
    out = server.push("a", 1, 0, grad(1), first, last)
    assert out.code is RejectCode.BAD_INTERVAL and "from 'a'" in out.reason and server.pending == ()


def test_a_duplicate_seq_is_still_held_and_a_push_without_interval_is_admitted_as_unknown():
    server = LevelCore("swarm/red", SHAPES, server=ServerConfig(window=4))
    assert server.push("a", 1, 0, grad(1), 1, 2).accepted
    assert server.push("a", 1, 0, grad(1), 1, 2).held  # Ray's retry of the same call: the seq says it is held
    assert server.push("a", 2, 0, grad(2)).accepted  # an old client: no interval
    assert server.covered("a") == Coverage(last=2, pushes=2, steps=2)
    assert server.push("a", 3, 0, grad(3), 3, 3).accepted  # unknown pushes do not block later intervals


def test_a_restart_keeps_what_each_sender_has_covered_and_the_journal_proves_it(tmp_path):
    cfg = ServerConfig(window=2, checkpoint_every=2)
    server = LevelCore("swarm/red", SHAPES, server=cfg, store_dir=tmp_path, config_hash="h")
    step = 0
    for seq in range(1, 8):  # 3 merges: a checkpoint at merge 2, then 3 pushes in the journal only
        server.push("a", seq, server.version, grad(seq), step + 1, step + seq % 3 + 1)
        step += seq % 3 + 1
    again = LevelCore("swarm/red", SHAPES, server=cfg, store_dir=tmp_path, config_hash="h")
    assert again.covered("a") == server.covered("a") == Coverage(last=step, pushes=7, steps=step)
    assert again.push("a", 99, again.version, grad(8), step, step + 1).code is RejectCode.OVERLAP
    proof = audit(tmp_path, "h")
    assert proof.violations == [] and proof.coverage == {"a": server.covered("a")}
    held = proof.intervals["a"]  # the 3 journaled after the checkpoint: back to back, up to the last step
    assert len(held) == 3 and held[-1][1] == step
    assert all(b[0] == a[1] + 1 for a, b in zip(held, held[1:], strict=False))


def test_the_audit_finds_an_interval_journaled_twice(tmp_path):
    store = LevelStore(tmp_path, config_hash="h")
    for first, last in [(1, 3), (4, 5), (4, 6)]:  # the last one repeats steps 4-5 (what the bug did)
        store.append(*PushRecord("a", first, 0, grad(first), first, last).to_journal())
    proof = audit(tmp_path, "h")
    assert proof.violations == ["journal record 2: 'a' steps 4..6 overlap the steps through 5 already held"]


def test_old_journals_without_intervals_recover_as_unknown(tmp_path):
    store = LevelStore(tmp_path, config_hash="h")
    for seq in (1, 2, 3):  # the journal form from before exactly-once accounting
        tensors, meta = PushRecord("a", seq, 0, grad(seq)).to_journal()
        assert set(meta) == {"sender", "seq", "base_version"}
        store.append(tensors, meta)
    server = LevelCore("swarm/red", SHAPES, server=ServerConfig(window=2), store_dir=tmp_path, config_hash="h")
    assert server.seen("a") == 3 and server.covered("a") == Coverage(last=0, pushes=3, steps=0)
    assert server.push("a", 4, server.version, grad(4), 1, 5).accepted  # intervals start from here
    proof = audit(tmp_path, "h")
    assert proof.unknown == 3 and proof.violations == [] and proof.coverage["a"] == Coverage(5, 4, 5)
    assert from_journal(*PushRecord("a", 4, 0, grad(4), 1, 5).to_journal()).last_step == 5


def test_a_forced_flush_is_journaled_so_an_older_checkpoint_replays_the_same_forwards(tmp_path):
    cfg = ServerConfig(window=3, checkpoint_every=100, forward_every=1)

    def level():
        return LevelCore("swarm/red", SHAPES, server=cfg, parent="domain/x", store_dir=tmp_path, config_hash="h")

    server = level()
    for seq in range(1, 4):  # one full window: merge 1
        server.push("a", seq, server.version, grad(seq), seq, seq)
    server.checkpoint()
    for seq in range(4, 6):  # two pushes, then a checkpoint forces their merge (merge 2)
        server.push("a", seq, server.version, grad(seq), seq, seq)
    server.checkpoint()
    for seq in range(6, 9):  # merge 3
        server.push("a", seq, server.version, grad(seq), seq, seq)
    kinds = [from_journal(*r).kind for r in LevelStore(tmp_path, config_hash="h").recover().records]
    assert kinds == ["push"] * 3  # the flush went into the older segment, before its checkpoint
    newest = sorted(tmp_path.glob("ckpt-*"))[-1] / "tensors.safetensors"
    data = bytearray(newest.read_bytes())
    data[-3] ^= 0xFF  # the newest checkpoint is corrupt: recover from the older one and replay both segments
    newest.write_bytes(bytes(data))
    again = level()
    assert any("corrupt" in w for w in again.warnings)
    assert again.version == server.version == 3
    assert all(torch.equal(again.B[m], server.B[m]) for m in SHAPES)
    ups = [(e.seq, e.first_step, e.last_step) for e in server.uplink.outbox]
    assert ups == [(1, 1, 1), (2, 2, 2), (3, 3, 3)]  # forward_every 1: one entry per merge, its merge interval
    assert [(e.seq, e.first_step, e.last_step) for e in again.uplink.outbox] == ups
    assert all(torch.equal(a.tensors[m], b.tensors[m])
               for a, b in zip(again.uplink.outbox, server.uplink.outbox, strict=True) for m in SHAPES)
    assert isinstance(from_journal({}, {"kind": "flush"}), FlushRecord)


def test_a_forward_resent_under_a_new_seq_is_refused_by_its_merge_interval():
    top = LinkedLevel(LevelCore("domain/x", SHAPES, server=ServerConfig(window=1)))
    cfg = ServerConfig(window=1, forward_every=1)
    red = LinkedLevel(LevelCore("swarm/red", SHAPES, server=cfg, parent="domain/x"), top)
    for i in range(1, 4):
        red.push("a", i, red.core.version, grad(i), i, i)
    assert top.covered("swarm/red") == Coverage(last=3, pushes=3, steps=3)
    # an uplink that numbers its entries differently (a replay that went another way) re-sends merge 3
    red.core.uplink.seq, red.core.uplink.through = 10, 2
    red.push("a", 4, red.core.version, grad(4), 4, 4)  # merge 4: the entry sums merges 3..4
    stats = red.core.status().stats
    assert stats["forward_rejected"] == {RejectCode.OVERLAP.value: 1}
    assert top.covered("swarm/red") == Coverage(last=3, pushes=3, steps=3)  # merge 3 is applied once up there
