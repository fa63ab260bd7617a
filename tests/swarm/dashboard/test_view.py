"""The dashboard's view model: tree, merge rates, curves, the metrics log tail, circuit origins (no Ray)."""

import json

import pytest

from cluster.topology import ServerSpec
from swarm.dashboard.app import check_access, split_address
from swarm.dashboard.feed import dumps
from swarm.dashboard.view import Curves, MetricsTail, Rates, origin, tree

SERVERS = [ServerSpec("foundation", "foundation", None, 1), ServerSpec("domain/toy", "domain", "foundation", 2),
           ServerSpec("swarm/red", "swarm", "domain/toy", 2), ServerSpec("swarm/blue", "swarm", "domain/toy", 1)]
ROUTES = {a: {"swarm": f"swarm/{a.split('/')[1]}", "domain": "domain/toy", "foundation": "foundation"}
          for a in ("toy/red/a1", "toy/red/a2", "toy/blue/b1")}


def status(version, merges, rejected=None, screened=0.1):
    return {"version": version, "pending": 0, "screened_fraction": screened,
            "stats": {"merges": merges, "rejected": rejected or {}, "promotions": 0}}


def test_tree_nests_levels_and_puts_each_agent_under_its_team():
    rates, curves = Rates(), Curves()
    rates.add("swarm/red", 100.0, 2)
    rates.add("swarm/red", 130.0, 5)  # 3 merges in 30 s
    for aid, bpb in (("toy/red/a1", 2.0), ("toy/red/a2", 3.0)):
        curves.add({"agent": aid, "eval_start": 4.0, "eval_step": 10, "eval_bpb": bpb})
    levels = {"swarm/red": status(7, 5, {"staleness": 2, "norm": 1}), "foundation": status(1, 1)}
    agents = {"toy/red/a1": {"agent": "toy/red/a1", "step": 10, "eval_bpb": 2.0, "pushes": 4, "rejected": 1}}
    root = tree(SERVERS, ROUTES, levels, agents, rates, curves)
    assert root["name"] == "foundation" and [c["name"] for c in root["children"]] == ["domain/toy"]
    teams = {c["name"]: c for c in root["children"][0]["children"]}
    assert set(teams) == {"swarm/red", "swarm/blue"}
    red = teams["swarm/red"]
    assert [c["name"] for c in red["children"]] == ["toy/red/a1", "toy/red/a2"]
    assert red["version"] == 7 and red["refusals"] == 3 and red["merges_per_min"] == pytest.approx(6.0)
    assert red["seconds_per_merge"] == pytest.approx(10.0) and red["bpb"] == pytest.approx(2.5)
    assert red["children"][0]["bpb"] == 2.0 and red["children"][1]["step"] == 0  # never published: zeros
    assert teams["swarm/blue"]["merges_per_min"] is None and teams["swarm/blue"]["version"] == 0


def test_rates_restart_with_a_restarted_server_and_curves_keep_each_step_once():
    rates = Rates()
    for t, m in ((0, 10), (10, 12), (20, 1), (30, 3)):
        rates.add("x", t, m)
    assert rates.per_minute("x") == pytest.approx(12.0)  # counted from the restart only
    rates.add("x", 25, 99)  # older than what it holds: ignored
    assert rates.per_minute("x") == pytest.approx(12.0)
    curves = Curves()
    assert curves.add({"agent": "a", "eval_start": 5.0, "eval_step": None, "eval_bpb": None})
    assert not curves.add({"agent": "a", "eval_start": 5.0, "eval_step": None, "eval_bpb": None})
    curves.add({"agent": "a", "eval_start": 5.0, "eval_step": 20, "eval_bpb": 4.0})
    curves.add({"agent": "b", "eval_start": 6.0, "eval_step": 20, "eval_bpb": float("nan")})
    assert curves.agent("a") == [[0, 5.0], [20, 4.0]] and curves.mean(["a", "b"]) == [[0, 5.5], [20, 4.0]]


def test_metrics_tail_reads_only_complete_new_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    tail = MetricsTail(path)
    assert tail.read() == []  # no file yet
    path.write_text(json.dumps({"kind": "agent", "step": 1}) + "\n" + '{"kind": "ser')
    assert tail.read() == [{"kind": "agent", "step": 1}]
    with open(path, "a") as f:
        f.write('ver", "name": "x"}\n')
    assert tail.read() == [{"kind": "server", "name": "x"}] and tail.read() == []


def test_origin_names_the_carriers_of_a_promotion():
    events = [{"kind": "promotion", "detail": "0.mlp.up_proj: sigma 0.12 from toy/red/a1, toy/red/a2"}]
    assert origin("0.mlp.up_proj", events) == "promoted from toy/red/a1, toy/red/a2"
    assert origin("0.mlp.down_proj", events) == "grown here"


def test_addresses_beyond_loopback_need_a_token_and_json_has_no_nan():
    assert split_address("[::1]:8700") == ("::1", 8700)
    with pytest.raises(ValueError, match="HOST:PORT"):
        split_address("8700")
    check_access("127.0.0.1:0", None)
    with pytest.raises(ValueError, match="not a loopback address"):
        check_access("0.0.0.0:8700", None)
    check_access("0.0.0.0:8700", "s3cret")
    assert json.loads(dumps({"a": float("nan"), "b": [float("inf"), 1.5], "NaN": "NaN"})) == \
        {"a": None, "b": [None, 1.5], "NaN": "NaN"}


def test_a_stopped_runs_level_without_tracked_circuits_shows_its_strongest_components():
    import torch

    from layers.circuits.config import CircuitsConfig
    from swarm.dashboard.feed import extracted

    u, w = torch.zeros(6), torch.zeros(4)
    u[2], w[1] = 1.0, 1.0
    tensors = {"m.a": 3.0 * torch.outer(u, w) + 0.01 * torch.randn(6, 4, generator=torch.Generator().manual_seed(0)),
               "m.b": torch.zeros(6, 4)}
    found = extracted(tensors, CircuitsConfig())
    assert found and found[0]["module"] == "m.a" and found[0]["strength"] == pytest.approx(3.0, abs=0.05)
    assert abs(float(found[0]["w"] @ w)) > 0.99 and found[0]["origin"] == "extracted from the checkpoint"
    assert all(c["module"] == "m.a" for c in found)  # a zero matrix holds no circuit
