"""Journal records: each kind round-trips through its journal form and through the store on disk."""

import pytest
import torch

from cluster.level.protocol import CircuitRef
from cluster.level.records import (
    AbsorbRecord,
    AcceptedCircuit,
    ConsensusRecord,
    PushRecord,
    RemovalRecord,
    from_journal,
)
from cluster.store import LevelStore
from cluster.wire import decode, encode

U, W = torch.ones(8) / 8**0.5, torch.ones(4) / 2
RECORDS = [
    PushRecord("a0", 3, 1, {"m.q": torch.randn(8, 4), "m.v": torch.randn(6, 4)}),
    ConsensusRecord((AcceptedCircuit("m.q", 1.5, ("a0", "a1"), U, W),
                     AcceptedCircuit("m.v", -0.25, ("a2",), torch.ones(6) / 6**0.5, W, bypassed=True))),
    RemovalRecord((CircuitRef("m.q", U, W, 0.5), CircuitRef("m.v", torch.ones(6) / 6**0.5, W))),
    AbsorbRecord("adapters/a,adapters/b", {"m.v": torch.randn(6, 4), "m.q": torch.randn(8, 4)}),
]


def same(a, b) -> bool:
    """Equal records: every field equal, tensors bit for bit (dataclass == does not compare tensors)."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, tuple | list):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if hasattr(a, "__dataclass_fields__"):
        return type(a) is type(b) and all(same(getattr(a, f), getattr(b, f)) for f in a.__dataclass_fields__)
    return a == b


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: r.kind)
def test_a_record_round_trips_through_its_journal_form_and_the_wire(record):
    tensors, meta = record.to_journal()
    assert same(from_journal(tensors, meta), record if record.kind != "absorb" else
                AbsorbRecord(record.source, {m: record.tensors[m] for m in sorted(record.tensors)}))
    wired = decode(encode(tensors, meta))  # what the journal file holds
    assert same(from_journal(*wired), from_journal(tensors, meta))


def test_journal_meta_keeps_the_keys_old_journals_have():
    push, circuits, removals, absorb = (r.to_journal()[1] for r in RECORDS)
    assert push == {"sender": "a0", "seq": 3, "base_version": 1}  # no kind: a push
    assert circuits == {"kind": "circuits", "circuits": [
        {"module": "m.q", "sigma": 1.5, "agents": ["a0", "a1"], "bypassed": False, "exact": True, "score": 0.0},
        {"module": "m.v", "sigma": -0.25, "agents": ["a2"], "bypassed": True, "exact": True, "score": 0.0}]}
    assert removals == {"kind": "removals", "modules": ["m.q", "m.v"], "coefficients": [0.5, None]}
    assert absorb == {"kind": "absorb", "source": "adapters/a,adapters/b", "modules": ["m.q", "m.v"]}
    assert sorted(RECORDS[1].to_journal()[0]) == ["0/u", "0/w", "1/u", "1/w"]


def test_journals_from_before_the_joint_consensus_read_as_whole_projection_removals():
    (tensors, meta), (rt, rmeta) = RECORDS[1].to_journal(), RECORDS[2].to_journal()
    old = {"kind": "circuits", "circuits": [{k: c[k] for k in ("module", "sigma", "agents")} for c in meta["circuits"]]}
    assert [(c.exact, c.bypassed) for c in from_journal(tensors, old).circuits] == [(False, False)] * 2
    removals = from_journal(rt, {"kind": "removals", "modules": rmeta["modules"]}).removals
    assert [r.coefficient for r in removals] == [None, None]


def test_records_replay_from_the_store_in_order(tmp_path):
    store = LevelStore(tmp_path, config_hash="h")
    for record in RECORDS:
        store.append(*record.to_journal())
    replayed = [from_journal(t, m) for t, m in LevelStore(tmp_path, config_hash="h").recover().records]
    assert [r.kind for r in replayed] == ["push", "circuits", "removals", "absorb"]
    assert all(same(a, from_journal(*b.to_journal())) for a, b in zip(replayed, RECORDS, strict=True))


def test_an_unknown_kind_is_refused_by_name():
    with pytest.raises(ValueError, match="unknown kind 'merge'"):
        from_journal({}, {"kind": "merge"})
