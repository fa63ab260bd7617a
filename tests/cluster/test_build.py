"""Server specs of a topology: names, parents, windows and stores decided in one place."""

import pytest
import torch

from agents.config import ModelConfig, WorkloadConfig
from cluster.build import build_core, level_shapes, level_specs, link_levels
from cluster.config import ServerConfig
from cluster.topology import Topology
from layers import LevelsConfig
from layers.circuits import CircuitsConfig
from layers.dynamics import DynamicsConfig
from layers.merge import MergeConfig

WORKLOAD = WorkloadConfig(kind="synthetic", topology={"d1": {"a": ["x", "y", "z"]}, "d2": {"b": ["v"]}})
SHARED = ["swarm", "domain", "foundation"]
SECTIONS = dict(merge=MergeConfig(), dynamics=DynamicsConfig(), circuits=CircuitsConfig())


def test_first_level_servers_use_the_window_and_upper_ones_their_children():
    specs = level_specs(Topology(WORKLOAD, SHARED), server=ServerConfig(window=3), **SECTIONS)
    assert [(s.name, s.level, s.parent, s.children, s.server.window) for s in specs] == [
        ("foundation", "foundation", None, 2, 2), ("domain/d1", "domain", "foundation", 1, 1),
        ("domain/d2", "domain", "foundation", 1, 1), ("swarm/a", "swarm", "domain/d1", 3, 3),
        ("swarm/b", "swarm", "domain/d2", 1, 3)]
    assert all(s.store_dir is None and s.config_hash == "" for s in specs)


def test_upper_window_and_stores_are_taken_when_given(tmp_path):
    specs = level_specs(Topology(WORKLOAD, SHARED), server=ServerConfig(window=3, upper_window=5),
                        stores=lambda name: tmp_path / "levels" / name, config_hash="abc", **SECTIONS)
    assert {s.name: s.server.window for s in specs} == {"foundation": 5, "domain/d1": 5, "domain/d2": 5,
                                                        "swarm/a": 3, "swarm/b": 3}
    assert specs[-1].store_dir == str(tmp_path / "levels" / "swarm" / "b") and specs[-1].config_hash == "abc"


def test_upper_servers_step_by_upper_lr_when_given_else_by_lr():
    topo = Topology(WORKLOAD, SHARED)
    same = level_specs(topo, server=ServerConfig(lr=1e-2), **SECTIONS)
    assert {s.name: s.server.lr for s in same} == dict.fromkeys(
        ["foundation", "domain/d1", "domain/d2", "swarm/a", "swarm/b"], 1e-2)
    upper = level_specs(topo, server=ServerConfig(lr=1e-2, upper_lr=3e-2), **SECTIONS)
    assert {s.name: s.server.lr for s in upper} == {"foundation": 3e-2, "domain/d1": 3e-2, "domain/d2": 3e-2,
                                                    "swarm/a": 1e-2, "swarm/b": 1e-2}
    flat = level_specs(Topology(WORKLOAD, ["shared"], ["all"]), server=ServerConfig(lr=1e-2, upper_lr=3e-2),
                       **SECTIONS)
    assert flat[0].server.lr == 1e-2  # the only shared level is the first one


@pytest.mark.parametrize("bad", [0.0, -1e-3, float("nan"), float("inf")])
def test_a_bad_upper_lr_is_refused_by_name(bad):
    with pytest.raises(ValueError, match="server.upper_lr"):
        ServerConfig(upper_lr=bad)


def test_a_flat_run_has_one_server_with_the_first_level_window():
    specs = level_specs(Topology(WORKLOAD, ["shared"], ["all"]), server=ServerConfig(window=7), **SECTIONS)
    assert [(s.name, s.parent, s.children, s.server.window) for s in specs] == [("shared", None, 4, 7)]


def test_level_shapes_are_the_stacks_b_shapes():
    shapes = level_shapes(ModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64),
                          LevelsConfig(rank=8))
    assert shapes and all(r == 8 and d_out in (32, 64, 96) for d_out, r in shapes.values())


def test_linked_levels_are_wired_to_their_parents_and_cores_recover_from_their_stores(tmp_path):
    shapes = {"m": (4, 2)}
    specs = level_specs(Topology(WORKLOAD, SHARED), server=ServerConfig(window=1),
                        stores=lambda name: tmp_path / name, **SECTIONS)
    levels = link_levels(specs, shapes)
    assert levels["swarm/a"].parent is levels["domain/d1"] and levels["foundation"].parent is None
    assert levels["swarm/a"].push("d1/a/x", 1, 0, {"m": torch.ones(4, 2)}).accepted
    again = build_core(specs[-2], shapes)  # swarm/a, from its store
    assert again.version == levels["swarm/a"].core.version == 1 and again.seen("d1/a/x") == 1
