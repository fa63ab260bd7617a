import pytest

from agents.config import WorkloadConfig
from cluster.topology import Topology

SHARED = ["swarm", "domain", "foundation"]


def test_default_topology_gives_team_domain_and_foundation_servers_parents_first():
    topo = Topology(WorkloadConfig(), SHARED)
    assert [(s.name, s.parent, s.children) for s in topo.servers] == [
        ("foundation", None, 1), ("domain/python", "foundation", 2),
        ("swarm/net", "domain/python", 2), ("swarm/text", "domain/python", 2)]
    assert topo.route("python/text/json") == {"swarm": "swarm/text", "domain": "domain/python",
                                              "foundation": "foundation"}


def test_two_domains_share_one_foundation():
    wl = WorkloadConfig(kind="synthetic", topology={"d1": {"a": ["x", "y"]}, "d2": {"b": ["z"]}})
    topo = Topology(wl, SHARED)
    assert {s.name: s.children for s in topo.servers} == {"foundation": 2, "domain/d1": 1, "domain/d2": 1,
                                                          "swarm/a": 2, "swarm/b": 1}


def test_fewer_shared_levels_means_fewer_servers():
    topo = Topology(WorkloadConfig(), ["team"])
    assert [(s.name, s.parent) for s in topo.servers] == [("team/net", None), ("team/text", None)]


def test_bad_topologies_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="team name 'a' appears in more than one domain"):
        Topology(WorkloadConfig(kind="synthetic", topology={"d1": {"a": ["x"]}, "d2": {"a": ["y"]}}), SHARED)
    with pytest.raises(ValueError, match="at most 3 shared levels"):
        Topology(WorkloadConfig(), [*SHARED, "cosmos"])
