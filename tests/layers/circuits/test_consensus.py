import torch

from layers.circuits import Proposal, consensus

SHAPES = {"m": (16, 6), "n": (8, 6)}


def unit(n, gen):
    v = torch.randn(n, generator=gen)
    return v / v.norm()


def noisy(u, gen, eps=0.05):
    v = u + eps * torch.randn(u.shape, generator=gen)
    return v / v.norm()


def test_majority_sign_wins_and_the_dissenter_is_left_alone():
    gen = torch.Generator().manual_seed(0)
    u, w = unit(16, gen), unit(6, gen)
    props = [Proposal(f"a{i}", "m", 1.0 + 0.1 * i, noisy(u, gen), noisy(w, gen), 0.9) for i in range(3)]
    props.append(Proposal("dissent", "m", 1.2, -u, w, 0.9))  # the opposite circuit
    result = consensus(props, SHAPES)
    (acc,) = result.accepted
    assert acc.agents == ["a0", "a1", "a2"] and acc.agreement == 0.5
    assert float(acc.sigma * torch.outer(acc.u, acc.w).double().flatten() @ torch.outer(u, w).double().flatten()) > 1.0
    assert set(result.removals) == {"a0", "a1", "a2"}
    for removal in result.removals["a1"]:
        assert 0.9 < removal.coefficient < 1.3 and removal.matrix().shape == (16, 6)
    reasons = {p.agent_id: r for p, r in result.rejected}
    assert reasons == {"dissent": "dissents from the accepted consensus sign"}


def test_a_single_agent_is_never_promoted_to_a_shared_level():
    gen = torch.Generator().manual_seed(1)
    u, w = unit(16, gen), unit(6, gen)
    result = consensus([Proposal("solo", "m", 2.0, u, w, 1.0), Proposal("solo", "m", 1.9, noisy(u, gen), w, 1.0)],
                       SHAPES)
    assert not result.accepted and not result.removals
    assert all("only 1 distinct agent" in r for _, r in result.rejected)


def test_an_even_split_is_rejected():
    gen = torch.Generator().manual_seed(2)
    u, w = unit(16, gen), unit(6, gen)
    result = consensus([Proposal("a", "m", 1.0, u, w, 1.0), Proposal("b", "m", 1.0, -u, w, 1.0)], SHAPES)
    assert not result.accepted and all("agreement 0.00 below tau" in r for _, r in result.rejected)


def test_bad_proposals_are_rejected_with_a_reason_and_the_rest_go_on():
    gen = torch.Generator().manual_seed(3)
    u, w = unit(16, gen), unit(6, gen)
    good = [Proposal(a, "m", 1.0, noisy(u, gen), noisy(w, gen), 0.9) for a in ("a", "b")]
    bad = [
        Proposal("x", "nope", 1.0, u, w, 0.9),
        Proposal("y", "m", 1.0, u[:10], w, 0.9),
        Proposal("z", "m", float("nan"), u, w, 0.9),
        Proposal("v", "m", 1.0, u, torch.full((6,), float("inf")), 0.9),
        Proposal("s", "n", 1.0, unit(8, gen), unit(6, gen), 1.5),
    ]
    result = consensus(good + bad, SHAPES)
    assert len(result.accepted) == 1
    reasons = {p.agent_id: r for p, r in result.rejected}
    assert reasons["x"] == "unknown module 'nope'"
    assert reasons["y"] == "u has shape (10,), expected (16,)"
    assert "NaN or Inf" in reasons["z"] and "NaN or Inf" in reasons["v"]
    assert "score in [0, 1]" in reasons["s"]


def test_unrelated_circuits_form_separate_groups():
    gen = torch.Generator().manual_seed(4)
    u1, w1, u2, w2 = unit(16, gen), unit(6, gen), unit(16, gen), unit(6, gen)
    props = [Proposal(a, "m", 1.0, noisy(u1, gen), noisy(w1, gen), 0.9) for a in ("a", "b")]
    props += [Proposal(a, "m", 0.5, noisy(u2, gen), noisy(w2, gen), 0.9) for a in ("c", "d")]
    assert len(consensus(props, SHAPES).accepted) == 2
