import pytest
import torch

from cluster.server import LevelServer, ServerConfig
from layers.circuits import Proposal

SHAPES = {"m.q": (8, 4), "m.v": (6, 4)}


def grad(seed: int, scale: float = 1.0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    base = {m: torch.ones(s) for m, s in SHAPES.items()}  # a shared direction every agent agrees on
    return {m: scale * (b + 0.3 * torch.randn(b.shape, generator=gen)) for m, b in base.items()}


def test_window_merges_move_the_level_against_the_gradient():
    server = LevelServer("swarm/red", SHAPES, server=ServerConfig(window=2, lr=1e-2))
    for i in range(1, 7):
        out = server.push(f"a{i % 2}", (i + 1) // 2, server.version, grad(i))
        assert out["status"] == "accepted"
    assert server.version == 3 and server.stats["merges"] == 3 and server.stats["accepted"] == 6
    flat = torch.cat([server.B[m].flatten() for m in SHAPES])
    assert float(torch.nn.functional.cosine_similarity(flat, -torch.ones_like(flat), dim=0)) > 0.9


def test_pull_returns_only_what_changed():
    server = LevelServer("swarm/red", SHAPES, server=ServerConfig(window=1))
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
    return [
        (dict(sender="a", seq=1, base_version=0, tensors={**good, "m.x": good["m.q"]}), "unknown module"),
        (dict(sender="a", seq=1, base_version=0, tensors={"m.q": good["m.q"]}), "missing module"),
        (dict(sender="a", seq=1, base_version=0, tensors={**good, "m.q": good["m.q"][:, :3]}), "bad shape"),
        (dict(sender="a", seq=1, base_version=0, tensors={**good, "m.q": good["m.q"].double()}), "bad dtype"),
        (dict(sender="a", seq=1, base_version=0, tensors=nan), "not finite"),
        (dict(sender="a", seq=1, base_version=0, tensors=grad(0, scale=1e6)), "norm"),
        (dict(sender="a", seq=1, base_version=5, tensors=good), "bad base_version"),
        (dict(sender="", seq=1, base_version=0, tensors=good), "bad sender"),
        (dict(sender="a", seq=0, base_version=0, tensors=good), "duplicate seq"),
    ]


@pytest.mark.parametrize("kwargs, kind", _bad_cases())
def test_bad_pushes_are_rejected_with_a_reason_and_change_nothing(kwargs, kind):
    server = LevelServer("swarm/red", SHAPES, server=ServerConfig(window=1))
    before = {m: t.clone() for m, t in server.B.items()}
    out = server.push(**kwargs)
    assert out["status"] == "rejected" and out["reason"].startswith(kind)
    assert server.stats["rejected"] == {kind: 1} and server.version == 0
    assert all(torch.equal(server.B[m], before[m]) for m in SHAPES)


def test_duplicate_and_stale_pushes():
    server = LevelServer("swarm/red", SHAPES, server=ServerConfig(window=1, max_staleness=2))
    assert server.push("a", 1, 0, grad(1))["status"] == "accepted"
    assert server.push("a", 1, 1, grad(2))["reason"].startswith("duplicate seq")  # idempotent per (sender, seq)
    for i in range(2, 5):
        server.push("a", i, server.version, grad(i))
    assert server.push("b", 1, 0, grad(9))["reason"].startswith("staleness: 4 versions behind")


def test_restart_recovers_every_acknowledged_push_bit_for_bit(tmp_path):
    cfg = ServerConfig(window=2, checkpoint_every=2, lr=1e-2)
    crashed = LevelServer("swarm/red", SHAPES, server=cfg, store_dir=tmp_path / "s", config_hash="h")
    twin = LevelServer("swarm/red", SHAPES, server=cfg)  # never crashes, no store
    pushes = [(f"a{i % 3}", i // 3 + 1, grad(i)) for i in range(11)]  # 5 merges, 1 push left in the window
    for sender, seq, g in pushes:
        crashed.push(sender, seq, crashed.version, g)
        twin.push(sender, seq, twin.version, g)
    del crashed  # crash: the object is gone, only the directory remains
    restarted = LevelServer("swarm/red", SHAPES, server=cfg, store_dir=tmp_path / "s", config_hash="h")
    assert not restarted.warnings
    assert restarted.version == twin.version == 5 and len(restarted.window) == 1
    assert restarted.last_seq == twin.last_seq
    assert all(torch.equal(restarted.B[m], twin.B[m]) for m in SHAPES)
    for sender, seq, g in [("a0", 5, grad(20)), ("a1", 5, grad(21))]:  # both carry on identically
        restarted.push(sender, seq, restarted.version, g)
        twin.push(sender, seq, twin.version, g)
    assert all(torch.equal(restarted.B[m], twin.B[m]) for m in SHAPES)
    assert restarted.push("a0", 5, restarted.version, grad(22))["reason"].startswith("duplicate seq")


U, W = torch.ones(8) / 8**0.5, torch.ones(4) / 2


def circuit(agent: str, module: str = "m.q", sigma: float = 1.0) -> Proposal:
    u = U if module == "m.q" else torch.ones(6) / 6**0.5
    return Proposal(agent, module, sigma, u, W, 0.9)


def test_consensus_waits_for_every_child_then_adds_circuits_and_mails_removals():
    server = LevelServer("swarm/red", SHAPES, children=3)
    first = server.propose("a0", [circuit("a0"), circuit("a0", "m.v")])
    assert first["status"] == "accepted" and first["removals"] == [] and server.version == 0  # waiting
    server.propose("a1", [circuit("a1")])
    out = server.propose("a2", [circuit("a2")])
    assert server.version == 1 and server.stats["promotions"] == 1
    assert float(U @ server.B["m.q"] @ W) == pytest.approx(1.0, rel=1e-5)
    assert [r["module"] for r in out["removals"]] == ["m.q"]
    later = server.propose("a0", [])  # a0 collects its removal and its rejection on its next call
    assert [r["module"] for r in later["removals"]] == ["m.q"]
    assert any(m == "m.v" and "only 1 distinct agent" in why for m, why in later["rejected"])
    assert server.propose("a1", [])["removals"]  # a1's too


@pytest.mark.parametrize("sender, proposals, kind", [
    ("", [], "bad sender"),
    ("a0", "nope", "bad proposals"),
    ("a0", [circuit("a1")], "sender mismatch"),
])
def test_bad_proposals_are_rejected_with_a_reason(sender, proposals, kind):
    server = LevelServer("swarm/red", SHAPES, children=1)
    out = server.propose(sender, proposals)
    assert out["status"] == "rejected" and out["reason"].startswith(kind)
    assert server.stats["rejected_proposals"] == {kind: 1} and server.version == 0


def test_consensus_rejects_malformed_circuits_without_touching_the_level():
    server = LevelServer("swarm/red", SHAPES, children=2)
    server.propose("a0", [Proposal("a0", "m.q", 1.0, torch.ones(5), W, 0.9)])
    out = server.propose("a1", [Proposal("a1", "nope", 1.0, U, W, 0.9)])
    assert server.version == 0 and all(torch.count_nonzero(b) == 0 for b in server.B.values())
    assert any("unknown module" in why for _, why in out["rejected"])
    assert any("shape" in why for _, why in server.propose("a0", [])["rejected"])


def test_a_server_with_a_parent_forwards_merged_gradients_when_its_gate_fires():
    server = LevelServer("swarm/red", SHAPES, server=ServerConfig(window=1), parent="domain/x")
    for i in range(1, 4):
        server.push("a", i, server.version, grad(i))
    outbox = server.uplink.outbox
    assert outbox and outbox[0]["seq"] == 1 and set(outbox[0]["tensors"]) == set(SHAPES)
    total = {m: sum(e["tensors"][m] for e in outbox) + server.uplink.pending[m] for m in SHAPES}
    assert all(float(total[m].sum()) > 0 for m in SHAPES)  # the merged gradients, summed: nothing dropped
    server.uplink.acknowledged(outbox[-1]["seq"], parent_version=3)
    assert server.uplink.outbox == [] and server.uplink.parent_version == 3


def test_restart_keeps_circuits_removals_and_the_outbox(tmp_path):
    cfg = ServerConfig(window=1, checkpoint_every=2)
    store = tmp_path / "s"
    server = LevelServer("swarm/red", SHAPES, server=cfg, store_dir=store, config_hash="h", parent="domain/x",
                         children=2)
    for i in range(1, 4):
        server.push("a", i, server.version, grad(i))
    server.propose("a0", [circuit("a0")])
    server.propose("a1", [circuit("a1")])
    server.remove([{"module": "m.v", "u": torch.ones(6) / 6**0.5, "w": W}])
    restarted = LevelServer("swarm/red", SHAPES, server=cfg, store_dir=store, config_hash="h", parent="domain/x",
                            children=2)
    assert restarted.version == server.version and not restarted.warnings
    assert all(torch.equal(restarted.B[m], server.B[m]) for m in SHAPES)
    assert [e["seq"] for e in restarted.uplink.outbox] == [e["seq"] for e in server.uplink.outbox]
    assert [r["module"] for r in restarted.propose("a0", [])["removals"]] == ["m.q"]
    assert float(torch.ones(6) @ restarted.B["m.v"] @ W) == pytest.approx(0.0, abs=1e-6)


def test_events_record_merges_promotions_and_rejections():
    server = LevelServer("swarm/red", SHAPES, server=ServerConfig(window=1), children=2)
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
    from layers.merge import MergeConfig

    srv = LevelServer("swarm/t", {"m": (4, 2)}, merge=MergeConfig(aggregator="median"),
                      server=ServerConfig(window=2))
    srv.push("a", 1, 0, {"m": torch.ones(4, 2)})
    srv.push("b", 1, 0, {"m": torch.ones(4, 2)})  # merge 1: version 1
    srv.push("a", 2, 1, {"m": torch.ones(4, 2)})
    out = srv.push("b", 2, 0, {"m": torch.ones(4, 2)})  # one version stale: weight 1/2 for a weighted mean
    assert out["status"] == "accepted" and srv.version == 2 and srv.stats["merges"] == 2


def test_an_absorbed_delta_is_one_version_journaled_and_survives_a_restart(tmp_path):
    cfg = ServerConfig(window=2, checkpoint_every=100)
    server = LevelServer("domain/x", SHAPES, server=cfg, store_dir=tmp_path / "s", config_hash="h")
    name = next(iter(SHAPES))
    delta = {name: torch.full(SHAPES[name], 0.25)}
    out = server.absorb(delta, "adapters/a")
    assert out == {"status": "accepted", "version": 1} and server.stats["absorbed"] == 1
    assert torch.equal(server.B[name], delta[name])
    server.push("a", 1, 1, {m: torch.ones(s) for m, s in SHAPES.items()})  # journaled after the checkpoint
    restarted = LevelServer("domain/x", SHAPES, server=cfg, store_dir=tmp_path / "s", config_hash="h")
    assert restarted.version == 1 and all(torch.equal(restarted.B[m], server.B[m]) for m in SHAPES)
    assert len(restarted.window) == 1


@pytest.mark.parametrize("bad, reason", [({}, "bad tensors"), ({"nope": torch.zeros(2)}, "unknown module"),
                                         ("shape", "bad shape"), ("nan", "not finite")])
def test_a_bad_absorb_is_refused_and_changes_nothing(bad, reason):
    server = LevelServer("domain/x", SHAPES)
    name = next(iter(SHAPES))
    if bad == "shape":
        bad = {name: torch.zeros(1, 1)}
    elif bad == "nan":
        bad = {name: torch.full(SHAPES[name], float("nan"))}
    out = server.absorb(bad, "x")
    assert out["status"] == "rejected" and out["reason"].startswith(reason)
    assert server.version == 0 and all(not t.any() for t in server.B.values())
