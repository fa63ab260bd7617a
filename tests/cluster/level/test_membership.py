"""Membership of a level server (issue 18): members by name, joins and leaves journaled and replayed,
quorums and windows that follow them, refusals with exact codes, exactly once across a leave."""

import pytest
import torch

from agents.config import WorkloadConfig
from cluster.build import LevelSpec, build_core, level_specs
from cluster.config import ServerConfig
from cluster.level.checkpointing import level_state
from cluster.level.core import LevelCore
from cluster.level.membership import MembershipRecord, MembershipResult
from cluster.level.protocol import RejectCode
from cluster.level.records import from_journal
from cluster.state import flatten
from cluster.storage import NoSpace, Storage
from cluster.topology import ServerSpec, Topology
from layers.circuits import CircuitsConfig
from layers.dynamics import DynamicsConfig
from layers.merge import MergeConfig
from tests.cluster.level.test_core import SHAPES, circuit, grad

SECTIONS = dict(merge=MergeConfig(), dynamics=DynamicsConfig(), circuits=CircuitsConfig())
WORKLOAD = WorkloadConfig(kind="synthetic", topology={"d1": {"a": ["x", "y", "z"]}, "d2": {"b": ["v"]}})


def team(**kw) -> LevelCore:
    return LevelCore("swarm/red", SHAPES, members=("a0", "a1", "a2"), **kw)


def test_topology_and_specs_name_every_servers_members():
    topo = Topology(WORKLOAD, ["swarm", "domain", "foundation"])
    assert {s.name: s.members for s in topo.servers} == {
        "foundation": ("domain/d1", "domain/d2"), "domain/d1": ("swarm/a",), "domain/d2": ("swarm/b",),
        "swarm/a": ("d1/a/x", "d1/a/y", "d1/a/z"), "swarm/b": ("d2/b/v",)}
    assert all(s.children == len(s.members) for s in topo.servers)
    specs = {s.name: s for s in level_specs(topo, server=ServerConfig(window=3), **SECTIONS)}
    assert specs["swarm/a"].members == ("d1/a/x", "d1/a/y", "d1/a/z") and not specs["swarm/a"].window_follows_members
    assert specs["foundation"].window_follows_members and specs["foundation"].server.window == 2
    fixed = level_specs(topo, server=ServerConfig(window=3, upper_window=5), **SECTIONS)
    assert not any(s.window_follows_members for s in fixed)  # an explicit upper_window stays as configured
    core = build_core(specs["foundation"], SHAPES)
    assert core.members == ("domain/d1", "domain/d2") and core.children == 2 and core.cfg.window == 2
    with pytest.raises(ValueError, match="children=3 but 2 members"):
        ServerSpec("swarm/a", "swarm", None, 3, ("x", "y"))
    with pytest.raises(ValueError, match="sorted tuple of distinct names"):
        LevelSpec("swarm/a", "swarm", None, 2, ServerConfig(), **SECTIONS, members=("y", "x"))


def test_a_consensus_round_waits_for_the_members_there_are_now():
    server = team()
    server.propose("a0", [circuit("a0")])
    server.propose("a1", [circuit("a1")])
    assert server.version == 0  # 2 of 3
    out = server.remove_member("a1")  # its buffered set is dropped: the round still waits for a2
    assert out == MembershipResult(True, None, "", 2, 0) and server.version == 0
    server.propose("a2", [circuit("a2")])
    assert server.version == 1 and server.status().counters.promotions == 1
    (test,) = [t for t in server.last_consensus if t.module == "m.q" and t.accepted]
    assert set(test.coefficients) == {"a0", "a2"}
    assert server.add_member("a3").children == 3  # three proposers again
    for a in ("a0", "a2"):
        server.propose(a, [circuit(a, "m.v")])
    assert server.version == 1
    server.propose("a3", [circuit("a3", "m.v")])
    assert server.version == 2


def test_a_window_sized_from_the_members_follows_them_and_a_configured_one_stays():
    domain = LevelCore("domain/d", SHAPES, server=ServerConfig(window=3), members=("t1", "t2", "t3"),
                       window_follows_members=True)
    assert domain.push("t1", 1, 0, grad(1)).accepted and domain.push("t2", 1, 0, grad(2)).accepted
    out = domain.remove_member("t3")  # the window shrinks to the 2 pushes it holds: they merge now
    assert domain.cfg.window == 2 and domain.merges == 1 and out.version == 1 == domain.version
    assert domain.add_member("t4").ok and domain.cfg.window == 3
    fixed = LevelCore("domain/d", SHAPES, server=ServerConfig(window=3), members=("t1", "t2", "t3"))
    fixed.push("t1", 1, 0, grad(1))
    fixed.remove_member("t3")
    assert fixed.cfg.window == 3 and fixed.children == 2 and len(fixed.pending) == 1


def _refusals():
    return [  # (changes made first, op, member, code, what the reason must say)
        ([], "add", "a1", RejectCode.DUPLICATE_MEMBER, "'a1' is already a member of swarm/red"),
        ([], "remove", "zz", RejectCode.NOT_MEMBER, "'zz' is not a member of swarm/red (never joined it)"),
        ([("remove", "a1")], "remove", "a1", RejectCode.NOT_MEMBER, "'a1' is not a member of swarm/red (left it"),
        ([("remove", "a0"), ("remove", "a1")], "remove", "a2", RejectCode.LAST_MEMBER, "would starve"),
        ([], "add", "", RejectCode.BAD_MEMBER, "non-empty string, got str ''"),
        ([], "add", 3, RejectCode.BAD_MEMBER, "got int 3"),
        ([], "remove", None, RejectCode.BAD_MEMBER, "got NoneType None"),
    ]


@pytest.mark.parametrize("before, op, member, code, says", _refusals())
def test_bad_changes_are_refused_with_a_code_and_change_nothing(tmp_path, before, op, member, code, says):
    server = team(store_dir=tmp_path, config_hash="h")
    for o, m in before:
        assert getattr(server, f"{o}_member")(m).ok
    members, children, journal = server.members, server.children, len(server._store.recover().records)
    out = getattr(server, f"{op}_member")(member)
    assert not out.ok and out.code is code and out.reason.startswith(f"{code.value}: ") and says in out.reason
    assert (out.children, out.version) == (children, 0) and server.members == members
    assert server.children == children and len(server._store.recover().records) == journal
    assert out.to_dict() == {"ok": False, "code": code.name, "reason": out.reason, "children": children,
                             "version": 0}


def test_a_server_without_member_names_and_a_failed_journal_write_refuse(tmp_path):
    anonymous = LevelCore("swarm/red", SHAPES, children=2)
    out = anonymous.add_member("a9")
    assert out.code is RejectCode.NO_MEMBER_LIST and "built from a children count" in out.reason
    assert anonymous.children == 2 and anonymous.members == ()
    storage, full = Storage(tmp_path / "level"), NoSpace(full=False)
    storage.inject(full)
    server = team(store_dir=storage)
    full.full = True
    out = server.remove_member("a2")
    assert out.code is RejectCode.STORAGE and server.members == ("a0", "a1", "a2") and server.children == 3
    full.full = False  # nothing reached the journal: a restart knows all three
    assert team(store_dir=tmp_path / "level").members == ("a0", "a1", "a2")


def test_a_leaving_members_acknowledged_pushes_merge_and_later_ones_are_refused():
    server, twin = team(server=ServerConfig(window=3)), team(server=ServerConfig(window=3))
    for s in (server, twin):
        assert s.push("a0", 1, 0, grad(1), first_step=1, last_step=4).accepted
        assert s.push("a1", 1, 0, grad(2)).accepted
    assert server.remove_member("a0").ok and len(server.pending) == 2  # acknowledged: it stays
    for s in (server, twin):
        s.push("a2", 1, 0, grad(3))
    assert server.merges == 1 and all(torch.equal(server.B[m], twin.B[m]) for m in SHAPES)  # a0's push merged
    late = server.push("a0", 2, server.version, grad(4), first_step=5, last_step=8)
    assert late.code is RejectCode.NOT_MEMBER and "'a0' left swarm/red" in late.reason
    proposal = server.propose("a0", [circuit("a0")])
    assert not proposal.accepted and proposal.code is RejectCode.NOT_MEMBER
    stats = server.status().stats
    assert stats["rejected"] == {"not a member": 1} and stats["rejected_proposals"] == {"not a member": 1}
    assert server.push("newcomer", 1, server.version, grad(5)).accepted  # never listed: admitted as before
    # back again: it resumes its own numbering (it restarts from its checkpoint)
    assert server.add_member("a0").ok and server.seen("a0") == 1 and server.covered("a0").last == 4
    assert server.push("a0", 1, server.version, grad(6)).code is RejectCode.DUPLICATE
    assert server.push("a0", 2, server.version, grad(4), first_step=3, last_step=8).code is RejectCode.OVERLAP
    assert server.push("a0", 2, server.version, grad(4), first_step=5, last_step=8).accepted
    kinds = [(e["kind"], e["detail"]) for e in server.events_since() if e["kind"] == "membership"]
    assert kinds == [("membership", "a0 left: 2 members, window 3"), ("membership", "a0 joined: 3 members, window 3")]
    status = server.status().to_dict()
    assert status["members"] == ["a0", "a1", "a2"] and status["children"] == 3


def _history(server: LevelCore, checkpoint_midway: bool) -> None:
    """Pushes, joins and leaves (a leave that flushes the window it shrinks), optionally a checkpoint midway."""
    server.push("t1", 1, 0, grad(1))
    server.push("t2", 1, 0, grad(2))
    server.remove_member("t3")  # window 3 -> 2, holding 2: merges
    server.add_member("t4")
    if checkpoint_midway:
        server.checkpoint()
    server.push("t4", 1, server.version, grad(3))
    server.remove_member("t1")  # window 3 -> 2, holding 1
    server.push("t2", 2, server.version, grad(4))  # merges
    server.add_member("t1")
    server.remove_member("t4")
    server.push("t1", 2, server.version, grad(5))


@pytest.mark.parametrize("checkpoint_midway", [False, True])
def test_a_restart_replays_the_same_members_window_version_and_tensors(tmp_path, checkpoint_midway):
    def build():
        return LevelCore("domain/d", SHAPES, server=ServerConfig(window=3, checkpoint_every=100),
                         members=("t1", "t2", "t3"), window_follows_members=True, store_dir=tmp_path,
                         config_hash="h")

    live = build()
    _history(live, checkpoint_midway)
    assert (live.members, live.roster.left, live.cfg.window, live.merges) == (("t1", "t2"), ("t3", "t4"), 2, 2)
    again = build()
    assert (again.version, again.members, again.children, again.cfg.window, again.roster.left) == \
           (live.version, live.members, live.children, live.cfg.window, live.roster.left)
    assert [r.sender for r in again.pending] == [r.sender for r in live.pending] == ["t1"] and not again.warnings
    assert all(torch.equal(again.B[m], live.B[m]) for m in SHAPES)
    assert again.status().counters == live.status().counters
    assert again.push("t4", 2, again.version, grad(6)).code is RejectCode.NOT_MEMBER  # still gone


def test_a_checkpoint_from_before_membership_loads_the_specs_members(tmp_path):
    old = LevelCore("swarm/red", SHAPES, server=ServerConfig(window=1), store_dir=tmp_path, config_hash="h")
    old.push("a0", 1, 0, grad(1))
    state = level_state(old)
    del state["membership"]  # what checkpoints written before membership hold
    tensors, skeleton = flatten(state)
    old._store.checkpoint(old.version, tensors, {"state": skeleton})
    core = team(server=ServerConfig(window=1), store_dir=tmp_path, config_hash="h")
    assert core.version == 1 and core.members == ("a0", "a1", "a2") and core.children == 3


def test_membership_records_round_trip_through_the_journal_form():
    for record in (MembershipRecord("add", "swarm/a"), MembershipRecord("remove", "d1/a/x")):
        assert from_journal(*record.to_journal()) == record
    with pytest.raises(ValueError, match="unknown op 'rename'"):
        from_journal({}, {"kind": "membership", "op": "rename", "member": "x"})


def test_the_server_actor_adds_and_removes_members(ray_session):
    import ray

    from cluster.actors import level_server

    spec = LevelSpec("swarm/members", "swarm", None, 2, ServerConfig(window=2), **SECTIONS, members=("a", "b"))
    server = level_server(spec, namespace="swarm-tests", shapes=SHAPES)
    assert ray.get(server.add_member.remote("c")) == {"ok": True, "code": None, "reason": "", "children": 3,
                                                      "version": 0}
    out = ray.get(server.remove_member.remote("zz"))
    assert out["code"] == "NOT_MEMBER" and not out["ok"] and out["children"] == 3
    assert ray.get(server.remove_member.remote("a"))["ok"]
    status = ray.get(server.status.remote())
    assert status["members"] == ["b", "c"] and status["children"] == 2
    assert ray.get(server.push.remote("a", 1, 0, grad(1))).code is RejectCode.NOT_MEMBER
    ray.kill(server, no_restart=True)
