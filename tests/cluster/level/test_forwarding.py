"""Forwarding up the tree: the uplink's outbox and the link that delivers it, in one process."""

import pytest
import torch

from cluster.config import ServerConfig
from cluster.level.core import LevelCore
from cluster.level.forwarding import LinkedLevel, forwarding_gate
from cluster.level.protocol import CircuitRef, ProposeResult, PushResult, RejectCode
from layers.projection import ReadGrowth

SHAPES = {"m.q": (8, 4), "m.v": (6, 4)}


def grad(seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {m: torch.ones(s) + 0.3 * torch.randn(s, generator=gen) for m, s in SHAPES.items()}


def test_a_level_with_a_parent_queues_merged_gradients_when_its_gate_fires():
    server = LevelCore("swarm/red", SHAPES, server=ServerConfig(window=1), parent="domain/x")
    for i in range(1, 6):  # forward_every 4: the gate fires by the 4th merge
        server.push("a", i, server.version, grad(i))
    outbox = server.uplink.outbox
    assert outbox and outbox[0].seq == 1 and set(outbox[0].tensors) == set(SHAPES)
    total = {m: sum(e.tensors[m] for e in outbox) + server.uplink.pending[m] for m in SHAPES}
    assert all(float(total[m].sum()) > 0 for m in SHAPES)  # the merged gradients, summed: nothing dropped
    server.uplink.acknowledged(outbox[-1].seq, parent_version=3)
    assert server.uplink.outbox == [] and server.uplink.parent_version == 3


def pair(tmp_path=None, parent_cfg=None):
    top = LinkedLevel(LevelCore("domain/x", SHAPES, server=parent_cfg or ServerConfig(window=1)))
    cfg = ServerConfig(window=1, forward_every=1, propose_every=2, checkpoint_every=1)
    store = None if tmp_path is None else tmp_path / "red"
    below = LevelCore("swarm/red", SHAPES, server=cfg, parent="domain/x", store_dir=store, config_hash="h")
    return top, LinkedLevel(below, top)


def test_the_link_forwards_every_gate_firing_and_counts_it():
    top, red = pair()
    for i in range(1, 4):
        assert red.push("a", i, red.core.version, grad(i)).accepted
    assert top.seen("swarm/red") == 3 and top.core.status().counters.accepted == 3
    assert red.core.uplink.outbox == []
    status = red.core.status()
    assert status.forwarding.forwarded == 3 and status.stats["forwarded"] == 3 and status.outbox == 0


def test_a_restarted_level_does_not_forward_twice(tmp_path):
    top, red = pair(tmp_path)
    for i in range(1, 4):
        red.push("a", i, red.core.version, grad(i))
    again = LinkedLevel(LevelCore("swarm/red", SHAPES, server=red.core.cfg, parent="domain/x",
                                  store_dir=tmp_path / "red", config_hash="h"), top)
    assert again.core.uplink.outbox == [] and top.core.status().counters.accepted == 3
    assert top.core.status().stats["rejected"] == {}  # nothing re-sent: the parent said what it holds


def test_a_grown_level_grows_its_parent_before_forwarding_at_the_new_rank():
    """A growth that entered at the team (an absorb, its own saturation) reaches the domain before the
    team's first forward at the grown rank; without it the domain refused that forward and it was lost."""
    top, red = pair()
    red.push("a", 1, red.core.version, grad(1))
    assert red.core.grow(ReadGrowth(4, 6, source="test")).accepted and red.core.rank == 6 and top.core.rank == 4
    grown = {m: torch.cat([t, torch.ones(t.shape[0], 2)], dim=1) for m, t in grad(2).items()}
    assert red.push("a", 2, red.core.version, grown).accepted
    assert top.core.rank == 6 and top.seen("swarm/red") == 2
    assert top.core.status().stats["rejected"] == {} and red.core.status().forwarding.rejected == {}
    assert all(top.core.B[m].shape == (SHAPES[m][0], 6) for m in SHAPES)
    assert float(top.core.B["m.q"][:, 4:].abs().sum()) > 0  # the new columns' gradient arrived


def test_a_forward_the_parent_refuses_is_counted_by_code_and_dropped():
    top, red = pair(parent_cfg=ServerConfig(window=1, max_norm=1e-3))
    red.push("a", 1, 0, grad(1))
    stats = red.core.status().stats
    assert stats["forward_rejected"] == {RejectCode.NORM.value: 1} and stats["forwarded"] == 0
    assert red.core.uplink.outbox == []  # never retried


def test_circuits_go_up_every_propose_every_merges_and_removals_come_back():
    u, w = torch.ones(8) / 8**0.5, torch.ones(4) / 2
    top, _ = pair()
    calls = []

    class Parent:  # the real parent for pushes; its consensus accepts one circuit of ours
        def push(self, *args) -> PushResult:
            return top.push(*args)

        def pull(self, since_version=-1):
            return top.pull(since_version)

        def propose(self, sender, proposals):
            calls.append(sender)
            return ProposeResult(True, top.core.version, removals=(CircuitRef("m.q", u, w),))

        def seen(self, sender):
            return top.seen(sender)

    cfg = ServerConfig(window=1, forward_every=1, propose_every=2)
    red = LinkedLevel(LevelCore("swarm/red", SHAPES, server=cfg, parent="domain/x"), Parent())
    red.push("a", 1, 0, grad(1))
    assert calls == []  # one merge: not yet
    red.push("a", 2, red.core.version, grad(2))
    assert calls == ["swarm/red"]  # after propose_every = 2 merges
    assert red.core.status().counters.removed == 1 and red.core.version == 3  # 2 merges + 1 removal
    assert float(u @ red.core.B["m.q"] @ w) == pytest.approx(0.0, abs=1e-6)


def test_a_link_must_match_the_cores_parent():
    with pytest.raises(ValueError, match="parent"):
        LinkedLevel(LevelCore("swarm/red", SHAPES, parent="domain/x"))
    with pytest.raises(ValueError, match="parent"):
        LinkedLevel(LevelCore("domain/x", SHAPES), LinkedLevel(LevelCore("foundation", SHAPES)))


BIG = {"m.q": (64, 8), "m.v": (48, 8)}  # 896 coordinates


def forwards(stream, cfg, merges):
    """(reason, merges summed) of every forward a team server queues over ``merges`` merges of ``stream``."""
    server = LevelCore("swarm/red", BIG, server=cfg, parent="domain/x")
    out, last = [], 0
    for i in range(1, merges + 1):
        server.push("a", i, server.version, stream())
        if len(server.uplink.outbox) > len(out):
            out.append((server.uplink.outbox[-1].reason, i - last))
            last = i
    return out


def test_a_server_forwards_early_when_the_merged_gradients_are_coherent():
    """forward_every 10: pushes carrying a common direction at 0.5 noise standard deviations are forwarded
    after 2-4 merges, as coherent (the first window waits for the gate to measure its stream's noise: 4
    merges); pure noise is forwarded at forward_every."""
    gen = torch.Generator().manual_seed(0)
    drift = {m: 0.5 * torch.randn(s, generator=gen).sign() for m, s in BIG.items()}
    cfg = ServerConfig(window=1, forward_every=10)

    def steady():
        return {m: drift[m] + torch.randn(s, generator=gen) for m, s in BIG.items()}

    def noise():
        return {m: torch.randn(s, generator=gen) for m, s in BIG.items()}

    early = forwards(steady, cfg, 30)
    assert {r for r, _ in early} == {"coherent"} and early[0][1] == 4 and max(n for _, n in early[1:]) <= 3, early
    assert len(early) >= 9  # against 3 at forward_every
    assert forwards(noise, cfg, 30) == [("max_interval", 10)] * 3


def test_the_forwarding_gate_takes_the_agents_test_between_forward_min_and_forward_every():
    from layers.dynamics import SyncConfig

    sync = SyncConfig(alpha=0.05, min_interval=1, max_interval=100)
    gate = forwarding_gate(sync, ServerConfig(forward_every=6, forward_min=3))
    assert (gate.enabled, gate.alpha, gate.min_interval, gate.max_interval) == (True, 0.05, 3, 6)
    assert forwarding_gate(sync, ServerConfig(forward_every=1)).min_interval == 1  # forward_min capped
    off = forwarding_gate(SyncConfig(enabled=False, min_interval=5), ServerConfig(forward_every=6))
    assert (off.enabled, off.min_interval, off.max_interval) == (False, 6, 6)  # a clock at forward_every
    with pytest.raises(ValueError, match="server.forward_min"):
        ServerConfig(forward_min=0)
