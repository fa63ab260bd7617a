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


def test_consensus_adds_accepted_circuits_and_returns_removals():
    server = LevelServer("swarm/red", SHAPES)
    u, w = torch.ones(8) / 8**0.5, torch.ones(4) / 2
    props = [Proposal(f"a{i}", "m.q", 1.0, u, w, 0.9) for i in range(3)] + [Proposal("lone", "m.v", 1.0,
                                                                                      torch.ones(6) / 6**0.5, w, 0.9)]
    out = server.propose(props)
    assert out["accepted"] == 1 and out["version"] == 1 and server.stats["promotions"] == 1
    assert set(out["removals"]) == {"a0", "a1", "a2"}
    assert float(u @ server.B["m.q"] @ w) == pytest.approx(1.0, rel=1e-5)
    assert any(r[0] == "lone" and "only 1 distinct agent" in r[2] for r in out["rejected"])
