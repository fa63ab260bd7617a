"""The level core without Ray: admission (with reject codes), merges, pulls, consensus, absorbs, replay."""

import pytest
import torch

from cluster.config import ServerConfig
from cluster.level.core import LevelCore
from cluster.level.protocol import CircuitRef, PushResult, RejectCode
from cluster.level.records import PushRecord
from layers.circuits import Proposal
from layers.merge import MergeConfig

SHAPES = {"m.q": (8, 4), "m.v": (6, 4)}


def grad(seed: int, scale: float = 1.0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    base = {m: torch.ones(s) for m, s in SHAPES.items()}  # a shared direction every agent agrees on
    return {m: scale * (b + 0.3 * torch.randn(b.shape, generator=gen)) for m, b in base.items()}


def test_window_merges_move_the_level_against_the_gradient():
    server = LevelCore("swarm/red", SHAPES, server=ServerConfig(window=2, lr=1e-2))
    for i in range(1, 7):
        out = server.push(f"a{i % 2}", (i + 1) // 2, server.version, grad(i))
        assert out == PushResult(True, server.version)
    counters = server.status().counters
    assert server.version == 3 and counters.merges == 3 and counters.accepted == 6
    flat = torch.cat([server.B[m].flatten() for m in SHAPES])
    assert float(torch.nn.functional.cosine_similarity(flat, -torch.ones_like(flat), dim=0)) > 0.9


def test_pull_returns_only_what_changed():
    server = LevelCore("swarm/red", SHAPES, server=ServerConfig(window=1))
    first = server.pull()
    assert first["changed"] and first["version"] == 0
    assert server.pull(0) == {"version": 0, "changed": False}
    server.push("a", 1, 0, grad(1))
    later = server.pull(0)
    assert later["changed"] and later["version"] == 1 and set(later["tensors"]) == set(SHAPES)


def _bad_cases():
    good = grad(0)
    nan = {**good, "m.q": good["m.q"].clone()}
    nan["m.q"][0, 0] = float("nan")
    push = dict(sender="a", seq=1, base_version=0)
    return [  # (push, code, what the reason must name)
        ({**push, "tensors": {**good, "m.x": good["m.q"]}}, RejectCode.UNKNOWN_MODULE, "'m.x'"),
        ({**push, "tensors": {"m.q": good["m.q"]}}, RejectCode.MISSING_MODULE, "'m.v'"),
        ({**push, "tensors": {**good, "m.q": good["m.q"][:, :3]}}, RejectCode.BAD_SHAPE, "'m.q' is (8, 3)"),
        ({**push, "tensors": {**good, "m.q": good["m.q"].double()}}, RejectCode.BAD_DTYPE, "'m.q'"),
        ({**push, "tensors": nan}, RejectCode.NOT_FINITE, "'m.q' contains NaN"),
        ({**push, "tensors": grad(0, scale=1e6)}, RejectCode.NORM, "above the limit"),
        ({**push, "base_version": 5, "tensors": good}, RejectCode.BAD_BASE_VERSION, "(server at 0)"),
        ({**push, "sender": "", "tensors": good}, RejectCode.BAD_SENDER, "non-empty"),
        ({**push, "seq": 0, "tensors": good}, RejectCode.DUPLICATE, "not above 0 for 'a'"),
        ({**push, "tensors": [1, 2]}, RejectCode.BAD_TENSORS, "got list"),
    ]


@pytest.mark.parametrize("kwargs, code, names", _bad_cases())
def test_bad_pushes_are_refused_with_a_code_and_a_reason_and_change_nothing(kwargs, code, names):
    server = LevelCore("swarm/red", SHAPES, server=ServerConfig(window=1))
    before = {m: t.clone() for m, t in server.B.items()}
    out = server.push(**kwargs)
    assert not out.accepted and out.code is code and out.status == "rejected"
    assert out.reason.startswith(f"{code.value}: ") and names in out.reason
    assert server.status().stats["rejected"] == {code.value: 1} and server.version == 0
    assert all(torch.equal(server.B[m], before[m]) for m in SHAPES)


def test_duplicate_and_stale_pushes():
    server = LevelCore("swarm/red", SHAPES, server=ServerConfig(window=1, max_staleness=2))
    assert server.push("a", 1, 0, grad(1)).accepted
    again = server.push("a", 1, 1, grad(2))  # idempotent per (sender, seq)
    assert again.code is RejectCode.DUPLICATE and again.held and not again.accepted
    for i in range(2, 5):
        server.push("a", i, server.version, grad(i))
    stale = server.push("b", 1, 0, grad(9))
    assert stale.code is RejectCode.STALE and stale.reason == "staleness: 4 versions behind, limit 2"
    assert not stale.held and server.status().stats["rejected"] == {"duplicate seq": 1, "staleness": 1}


def test_restart_recovers_every_acknowledged_push_bit_for_bit(tmp_path):
    """Replay through apply() reaches the very tensors and version of a server that never crashed."""
    cfg = ServerConfig(window=2, checkpoint_every=2, lr=1e-2)
    crashed = LevelCore("swarm/red", SHAPES, server=cfg, store_dir=tmp_path / "s", config_hash="h")
    twin = LevelCore("swarm/red", SHAPES, server=cfg)  # never crashes, no store
    pushes = [(f"a{i % 3}", i // 3 + 1, grad(i)) for i in range(11)]  # 5 merges, 1 push left in the window
    for sender, seq, g in pushes:
        crashed.push(sender, seq, crashed.version, g)
        twin.push(sender, seq, twin.version, g)
    del crashed  # crash: the object is gone, only the directory remains
    restarted = LevelCore("swarm/red", SHAPES, server=cfg, store_dir=tmp_path / "s", config_hash="h")
    assert not restarted.warnings
    assert restarted.version == twin.version == 5 and len(restarted.pending) == 1
    assert restarted.status().last_seq == twin.status().last_seq
    assert restarted.status().counters == twin.status().counters
    assert all(torch.equal(restarted.B[m], twin.B[m]) for m in SHAPES)
    for sender, seq, g in [("a0", 5, grad(20)), ("a1", 5, grad(21))]:  # both carry on identically
        restarted.push(sender, seq, restarted.version, g)
        twin.push(sender, seq, twin.version, g)
    assert all(torch.equal(restarted.B[m], twin.B[m]) for m in SHAPES)
    assert restarted.push("a0", 5, restarted.version, grad(22)).code is RejectCode.DUPLICATE


def test_applying_records_directly_is_what_a_push_does():
    live = LevelCore("swarm/red", SHAPES, server=ServerConfig(window=2))
    applied = LevelCore("swarm/red", SHAPES, server=ServerConfig(window=2))
    for i in range(1, 5):
        live.push("a", i, live.version, grad(i))
        applied.apply(PushRecord("a", i, applied.version, grad(i)))
    assert applied.version == live.version == 2 and applied.seen("a") == 4
    assert all(torch.equal(applied.B[m], live.B[m]) for m in SHAPES)
    with pytest.raises(TypeError, match="not a journal record"):
        applied.apply({"sender": "a"})


U, W = torch.ones(8) / 8**0.5, torch.ones(4) / 2


def circuit(agent: str, module: str = "m.q", sigma: float = 1.0) -> Proposal:
    """``agent``'s proposal of ``module``: its matrix holds ``sigma u W^T`` plus its own small noise."""
    u = U if module == "m.q" else torch.ones(6) / 6**0.5
    gen = torch.Generator().manual_seed(sum(map(ord, agent + module)))
    b = sigma * torch.outer(u, W) + 0.02 * torch.randn(SHAPES[module], generator=gen)
    return Proposal(agent, module, sigma, u, W, 0.9, b)


def test_consensus_waits_for_every_child_then_adds_circuits_and_mails_removals():
    server = LevelCore("swarm/red", SHAPES, children=3)
    first = server.propose("a0", [circuit("a0"), circuit("a0", "m.v")])
    assert first.accepted and first.removals == () and server.version == 0  # waiting
    server.propose("a1", [circuit("a1")])
    out = server.propose("a2", [circuit("a2")])
    assert server.version == 1 and server.status().counters.promotions == 1
    (r,) = out.removals
    sigma = float(r.u @ server.B["m.q"] @ r.w)
    assert sigma == pytest.approx(1.0, abs=0.05) and abs(float(r.u @ U)) > 0.99
    # each carrier removes exactly what the level added (so its sum of levels is unchanged)
    assert (r.module, r.coefficient) == ("m.q", pytest.approx(sigma, rel=1e-5))
    later = server.propose("a0", [])  # a0 collects its removal and its rejection on its next call
    assert [r.module for r in later.removals] == ["m.q"]
    assert ("m.v", "only 1 member(s) proposed 'm.v'; a shared level needs >= 2") in later.rejected
    assert server.propose("a1", []).removals  # a1's too
    first, second = [t for t in server.last_consensus if t.module == "m.q"]  # then nothing shared is left
    assert first.accepted and set(first.coefficients) == {"a0", "a1", "a2"} and not second.accepted


@pytest.mark.parametrize("sender, proposals, code", [
    ("", [], RejectCode.BAD_SENDER),
    ("a0", "nope", RejectCode.BAD_PROPOSALS),
    ("a0", [circuit("a1")], RejectCode.SENDER_MISMATCH),
])
def test_bad_proposals_are_refused_with_a_code(sender, proposals, code):
    server = LevelCore("swarm/red", SHAPES, children=1)
    out = server.propose(sender, proposals)
    assert not out.accepted and out.code is code and out.reason.startswith(code.value)
    assert server.status().stats["rejected_proposals"] == {code.value: 1} and server.version == 0


def test_consensus_rejects_malformed_circuits_without_touching_the_level():
    server = LevelCore("swarm/red", SHAPES, children=2)
    good = circuit("a0")
    server.propose("a0", [Proposal("a0", "m.q", 1.0, U, W, 0.9, good.b.double())])
    out = server.propose("a1", [Proposal("a1", "nope", 1.0, U, W, 0.9, good.b)])
    assert server.version == 0 and all(torch.count_nonzero(b) == 0 for b in server.B.values())
    assert out.rejected == (("nope", "unknown module 'nope'"),)
    assert server.propose("a0", []).rejected == (("m.q", "b of 'm.q' must be a float32 tensor"),)
    server.propose("a0", [Proposal("a0", "m.q", 1.0, U, W, 0.9, torch.full((8, 4), float("inf")))])
    out = server.propose("a1", [Proposal("a1", "m.q", 1.0, U, W, 0.9, good.b[:5])])
    assert out.rejected == (("m.q", "b of 'm.q' is (5, 4), expected (8, 4)"),)
    assert server.propose("a0", []).rejected == (("m.q", "b of 'm.q' contains NaN or Inf"),)
    assert server.version == 0 and server.status().counters.promotions == 0


def test_restart_keeps_circuits_removals_and_the_outbox(tmp_path):
    cfg = ServerConfig(window=1, checkpoint_every=2)
    store = tmp_path / "s"
    server = LevelCore("swarm/red", SHAPES, server=cfg, store_dir=store, config_hash="h", parent="domain/x",
                       children=2)
    for i in range(1, 4):
        server.push("a", i, server.version, grad(i))
    server.propose("a0", [circuit("a0")])
    server.propose("a1", [circuit("a1")])
    server.remove([CircuitRef("m.v", torch.ones(6) / 6**0.5, W)])
    restarted = LevelCore("swarm/red", SHAPES, server=cfg, store_dir=store, config_hash="h", parent="domain/x",
                          children=2)
    assert restarted.version == server.version and not restarted.warnings
    assert all(torch.equal(restarted.B[m], server.B[m]) for m in SHAPES)
    assert [e.seq for e in restarted.uplink.outbox] == [e.seq for e in server.uplink.outbox]
    assert [r.module for r in restarted.propose("a0", []).removals] == ["m.q"]
    assert float(torch.ones(6) @ restarted.B["m.v"] @ W) == pytest.approx(0.0, abs=1e-6)
    assert restarted.status().counters == server.status().counters


def test_events_record_merges_promotions_and_rejections():
    server = LevelCore("swarm/red", SHAPES, server=ServerConfig(window=1), children=2)
    server.push("a", 1, 0, grad(1))
    server.push("a", 1, 1, grad(2))  # duplicate
    server.propose("a0", [circuit("a0")])
    server.propose("a1", [circuit("a1")])
    kinds = [e["kind"] for e in server.events_since(0)]
    assert {"merge", "rejected", "promotion"} <= set(kinds)
    assert kinds.index("merge") < kinds.index("rejected") < kinds.index("promotion")  # in the order they happened
    last = server.events_since(0)[-1]["seq"]
    assert server.events_since(last) == []


def test_one_vote_aggregators_merge_pushes_of_mixed_staleness():
    """Median and Krum take no weights: a window with stale and fresh pushes must still merge."""
    srv = LevelCore("swarm/t", {"m": (4, 2)}, merge=MergeConfig(aggregator="median"), server=ServerConfig(window=2))
    srv.push("a", 1, 0, {"m": torch.ones(4, 2)})
    srv.push("b", 1, 0, {"m": torch.ones(4, 2)})  # merge 1: version 1
    srv.push("a", 2, 1, {"m": torch.ones(4, 2)})
    out = srv.push("b", 2, 0, {"m": torch.ones(4, 2)})  # one version stale: weight 1/2 for a weighted mean
    assert out.accepted and srv.version == 2 and srv.merges == 2


def test_an_absorbed_delta_is_one_version_journaled_and_survives_a_restart(tmp_path):
    cfg = ServerConfig(window=2, checkpoint_every=100)
    server = LevelCore("domain/x", SHAPES, server=cfg, store_dir=tmp_path / "s", config_hash="h")
    name = next(iter(SHAPES))
    delta = {name: torch.full(SHAPES[name], 0.25)}
    out = server.absorb(delta, "adapters/a")
    assert out.to_dict() == {"status": "accepted", "version": 1} and server.status().stats["absorbed"] == 1
    assert torch.equal(server.B[name], delta[name])
    server.push("a", 1, 1, {m: torch.ones(s) for m, s in SHAPES.items()})  # journaled after the checkpoint
    restarted = LevelCore("domain/x", SHAPES, server=cfg, store_dir=tmp_path / "s", config_hash="h")
    assert restarted.version == 1 and all(torch.equal(restarted.B[m], server.B[m]) for m in SHAPES)
    assert len(restarted.pending) == 1 and restarted.status().counters.absorbed == 1


@pytest.mark.parametrize("bad, code", [({}, RejectCode.BAD_TENSORS),
                                       ({"nope": torch.zeros(2)}, RejectCode.UNKNOWN_MODULE),
                                       ("shape", RejectCode.BAD_SHAPE), ("nan", RejectCode.NOT_FINITE)])
def test_a_bad_absorb_is_refused_and_changes_nothing(bad, code):
    server = LevelCore("domain/x", SHAPES)
    name = next(iter(SHAPES))
    if bad == "shape":
        bad = {name: torch.zeros(1, 1)}
    elif bad == "nan":
        bad = {name: torch.full(SHAPES[name], float("nan"))}
    out = server.absorb(bad, "x")
    assert not out.accepted and out.code is code and out.reason.startswith(code.value)
    assert server.version == 0 and all(not t.any() for t in server.B.values())


def test_the_status_json_keeps_its_keys():
    server = LevelCore("swarm/red", SHAPES, server=ServerConfig(window=1), parent="domain/x")
    server.push("a", 1, 0, grad(1))
    server.push("a", 1, 0, grad(1))
    status = server.status().to_dict()
    assert {"name", "version", "pending", "stats", "last_seq", "warnings", "outbox", "screened_fraction"} <= set(status)
    assert status["stats"] == {"accepted": 1, "merges": 1, "promotions": 0, "removed": 0, "forwarded": 0,
                               "rejected": {"duplicate seq": 1}, "rejected_proposals": {}}
    assert status["last_seq"] == {"a": 1} and status["version"] == 1 and status["pending"] == 0
