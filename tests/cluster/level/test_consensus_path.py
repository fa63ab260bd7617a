"""The propose path end to end: members' matrices -> joint consensus at a level -> exact removals.

Members here are real level stacks on a tiny Llama: the team level they share is what the
``LevelCore`` holds; a carrier removes what the level added and loads the level, and its
logits do not move. The bandwidth limit and its bypass hold at the level boundary too.
"""

import pytest
import torch

from cluster.config import ServerConfig
from cluster.level.core import LevelCore
from cluster.level.forwarding import LinkedLevel
from layers import LevelsConfig, LevelStack
from layers.circuits import CircuitsConfig, Proposal, remove_projection
from tests.conftest import make_tiny, randomize

LEVELS = ["context", "agent", "swarm"]


def unit(n, gen):
    v = torch.randn(n, generator=gen)
    return v / v.norm()


def team(n: int, seed: int = 0):
    """n members sharing a planted rank-1 direction in one module's agent level, on top of their own
    random levels; returns (stacks, module, u, w)."""
    stacks = []
    for i in range(n):
        stack = LevelStack.attach(make_tiny("llama"), LevelsConfig(names=LEVELS, rank=8))
        randomize(stack, std=0.05, seed=100 * seed + i)  # private parts: every level, every module
        for m in stack.modules.values():  # the team level starts as the server's: zero
            m.B["swarm"].data.zero_()
        stacks.append(stack)
    module = stacks[0].module_names[1]
    gen = torch.Generator().manual_seed(seed)
    u, w = unit(stacks[0].modules[module].out_features, gen), unit(8, gen)
    for s in stacks:
        s.modules[module].B["agent"].data.add_(1.5 * torch.outer(u, w))
    return stacks, module, u, w


def propose(stack: LevelStack, agent: str, module: str, score: float = 0.9) -> Proposal:
    b = stack.modules[module].B["agent"].detach().clone()
    uu, ss, vh = torch.linalg.svd(b)
    return Proposal(agent, module, float(ss[0]), uu[:, 0], vh[0], score, b)


def test_a_consensus_circuit_moves_to_the_team_level_without_changing_any_carriers_logits(tokens):
    stacks, module, u, w = team(3)
    shapes = {n: tuple(m.B["swarm"].shape) for n, m in stacks[0].modules.items()}
    server = LevelCore("swarm/t", shapes, children=3)
    with torch.no_grad():
        before = [s.model(tokens).logits for s in stacks]
    outs = [server.propose(f"a{i}", [propose(s, f"a{i}", module)]) for i, s in enumerate(stacks)]
    removals = [outs[2].removals, *(server.propose(f"a{i}", []).removals for i in range(2))]
    removals = [removals[1], removals[2], removals[0]]  # in member order
    assert server.status().counters.promotions == 1 and all(len(r) == 1 for r in removals)
    taken = float(removals[0][0].u @ server.B[module] @ removals[0][0].w)
    assert taken > 1.0 and abs(float(removals[0][0].u @ u)) * abs(float(removals[0][0].w @ w)) > 0.9
    for stack, (r,) in zip(stacks, removals, strict=True):
        assert r.coefficient == pytest.approx(taken, rel=1e-5)
        remove_projection(stack.modules[r.module].B["agent"], r.u, r.w, r.coefficient)
        stack.load_level_state("swarm", server.pull()["tensors"])
    with torch.no_grad():
        after = [s.model(tokens).logits for s in stacks]
    for a, b in zip(after, before, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_removing_the_whole_projection_instead_would_change_a_carriers_logits(tokens):
    """Why removals carry the level's coefficient: carriers hold different amounts."""
    stacks, module, u, w = team(2, seed=1)
    stacks[1].modules[module].B["agent"].data.add_(0.5 * torch.outer(u, w))  # the second carries more
    shapes = {n: tuple(m.B["swarm"].shape) for n, m in stacks[0].modules.items()}
    server = LevelCore("swarm/t", shapes, children=2)
    server.propose("a0", [propose(stacks[0], "a0", module)])
    (r,) = server.propose("a1", [propose(stacks[1], "a1", module)]).removals
    with torch.no_grad():
        before = stacks[1].model(tokens).logits
        whole = remove_projection(stacks[1].modules[module].B["agent"], r.u, r.w)  # its whole projection
        stacks[1].load_level_state("swarm", server.pull()["tensors"])
        after = stacks[1].model(tokens).logits
    assert whole > r.coefficient + 0.3 and not torch.allclose(after, before, rtol=1e-5, atol=1e-6)


def _planted_members(n_modules: int, gen):
    shapes = {f"m{i}": (16, 4) for i in range(n_modules)}
    dirs = {m: (unit(16, gen), unit(4, gen)) for m in shapes}

    def member(agent, score):
        return [Proposal(agent, m, 1.0, u, w, score, (1.0 + 0.1 * i) * torch.outer(u, w)
                         + 0.02 * torch.randn(16, 4, generator=gen))
                for i, (m, (u, w)) in enumerate(dirs.items())]
    return shapes, member


@pytest.mark.parametrize("score, promoted, deferred, bypassed", [(0.9, 1, 2, 0), (0.99, 3, 0, 2)])
def test_the_level_boundary_has_a_token_bucket_and_an_emergency_bypass(score, promoted, deferred, bypassed):
    shapes, member = _planted_members(3, torch.Generator().manual_seed(0))
    cfg = CircuitsConfig(tokens_per_window=1, window=50, bypass_threshold=0.98)
    server = LevelCore("swarm/t", shapes, circuits=cfg, children=2)
    server.propose("a0", member("a0", score))
    out = server.propose("a1", member("a1", score))
    counters = server.status().counters
    assert (counters.promotions, counters.deferred, counters.bypassed) == (promoted, deferred, bypassed)
    assert sum(why == "deferred: bandwidth limit" for _, why in out.rejected) == deferred
    if deferred:  # the strongest (score x sigma) got the one token
        assert [r.module for r in out.removals] == ["m2"]
        assert server.status().stats["deferred"] == deferred


def test_a_level_removes_exactly_what_its_parent_took(tmp_path):
    """Team -> domain: a team's proposals carry its matrix; the domain's removal coefficient is applied
    by the team (journaled, so a restart replays the same level)."""
    gen = torch.Generator().manual_seed(3)
    shapes = {"m": (16, 4)}
    u, w = unit(16, gen), unit(4, gen)
    cfg = CircuitsConfig(min_age=2, score_threshold=0.3)  # a steadily growing circuit's traces lag: score ~0.35
    domain = LevelCore("domain/d", shapes, circuits=cfg, children=2)
    teams = [LevelCore(f"swarm/t{i}", shapes, circuits=cfg, parent="domain/d",
                       server=ServerConfig(window=1, propose_every=3), store_dir=tmp_path / f"t{i}", config_hash="h")
             for i in range(2)]
    links = [LinkedLevel(t, domain) for t in teams]
    for step in range(1, 7):  # pushes against the planted direction: every team level grows along it
        for link in links:
            g = -torch.outer(u, w) + 0.05 * torch.randn(16, 4, generator=gen)
            link.push("a", step, link.core.version, {"m": g})
    assert domain.status().counters.promotions >= 1
    for t in teams:
        assert t.status().counters.removed >= 1
        restarted = LevelCore(t.name, shapes, circuits=cfg, parent="domain/d", server=ServerConfig(window=1),
                              store_dir=tmp_path / t.name.split("/")[1], config_hash="h")
        assert torch.equal(restarted.B["m"], t.B["m"])


def test_a_circuit_consensus_added_is_proposed_upward_at_once_and_an_empty_bucket_spares_the_tests(tmp_path):
    """Stability is inherited: the carriers' detectors vouched for it, so the team level need not wait
    min_age merges of its own tracker before proposing it to the domain (the restart keeps that)."""
    shapes, member = _planted_members(2, torch.Generator().manual_seed(5))
    cfg = CircuitsConfig(tokens_per_window=2, window=50, min_age=1000)  # its own tracker never vouches
    kw = dict(circuits=cfg, parent="domain/d", children=2, store_dir=tmp_path, config_hash="h")
    level = LevelCore("swarm/t", shapes, **kw)
    assert level.proposals_up() == []
    level.propose("a0", member("a0", 0.9))
    level.propose("a1", member("a1", 0.9))
    up = level.proposals_up()
    assert level.status().counters.promotions == 2 and [p.module for p in up] == ["m0", "m1"]
    for p in up:
        assert p.agent_id == "swarm/t" and p.score == pytest.approx(0.9) and torch.equal(p.b, level.B[p.module])
        assert p.sigma == pytest.approx(float(p.u @ level.B[p.module] @ p.w), rel=1e-5)
    level.checkpoint()
    restarted = LevelCore("swarm/t", shapes, **kw)
    assert [p.module for p in restarted.proposals_up()] == ["m0", "m1"]
    # the bucket is empty now (2 tokens per 50 merges): the next round is deferred without testing
    restarted.propose("a0", member("a0", 0.9))
    out = restarted.propose("a1", member("a1", 0.9))
    assert out.rejected == (("m0", "deferred: bandwidth limit"), ("m1", "deferred: bandwidth limit"))
    assert restarted.last_consensus == [] and restarted.status().counters.promotions == 2


def test_what_a_team_round_adds_goes_to_the_domain_at_once():
    """No merges at all: agents' consensus at two teams, then the domain's, within the agents' propose calls."""
    shapes, member = _planted_members(1, torch.Generator().manual_seed(6))  # one direction every agent holds
    domain = LinkedLevel(LevelCore("domain/d", shapes, children=2))
    teams = [LinkedLevel(LevelCore(f"swarm/t{i}", shapes, parent="domain/d", children=2), domain) for i in range(2)]
    for i, t in enumerate(teams):
        t.propose(f"a{i}0", member(f"a{i}0", 0.9))
        t.propose(f"a{i}1", member(f"a{i}1", 0.9))
    assert [t.core.status().counters.promotions for t in teams] == [1, 1]
    assert domain.core.status().counters.promotions == 1 and domain.core.merges == 0
    assert [t.core.status().counters.removed for t in teams] == [0, 1]  # the first collects its removal later
    teams[0].propose_up()
    assert teams[0].core.status().counters.removed == 1
    assert sum(x.accepted for x in domain.core.last_consensus) == 1 and float(domain.core.B["m0"].norm()) > 0.5
