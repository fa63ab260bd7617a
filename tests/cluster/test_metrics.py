"""The swarm's metrics on Ray's Prometheus endpoint: a small live run, scraped like Prometheus would."""

import io
import re
import time
import urllib.request

import pytest
import torch
from rich.console import Console

from cluster.metrics import INBOX_COUNTERS, SERIES, AgentProbe, LevelProbe, exported_name
from swarm.api.client import Client
from swarm.api.proto import memory_pb2 as pb
from swarm.api.server import MemoryServer
from swarm.api.servicer import build_service
from swarm.config import load_config
from swarm.run.driver import Run
from tests.cluster.test_runtime import OVERRIDES

SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def scrape(port: int) -> list[tuple[str, dict[str, str], float]]:
    """The samples of http://127.0.0.1:PORT/metrics: (name, labels, value)."""
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out = []
    for line in body.splitlines():
        m = SAMPLE.match(line)
        if m and not line.startswith("#"):
            out.append((m["name"], dict(LABEL.findall(m["labels"] or "")), float(m["value"])))
    return out


def value(samples, name: str, **labels) -> float:
    """The sum of ``name``'s samples whose labels include ``labels`` (0 when none)."""
    return sum(v for n, lab, v in samples if n == name and all(lab.get(k) == x for k, x in labels.items()))


def test_names_follow_prometheus_conventions():
    for name, (kind, tags, unit, meaning) in SERIES.items():
        assert re.fullmatch(r"swarm_[a-z_]+", name) and meaning and unit and tags
        assert not name.endswith("_total"), f"{name}: Ray appends _total to counters itself"
        assert kind != "histogram" or name.endswith("_seconds"), f"{name}: histograms here time things"
    assert exported_name("swarm_agent_steps") == "ray_swarm_agent_steps_total"
    assert exported_name("swarm_merge_seconds") == "ray_swarm_merge_seconds"


def test_the_grafana_dashboard_plots_every_series_and_only_those():
    import json
    from pathlib import Path

    dashboard = json.loads((Path(__file__).parents[2] / "infra" / "grafana" / "swarm.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {re.sub(r"_(bucket|count|sum)$", "", n) for e in exprs for n in re.findall(r"ray_swarm_\w+", e)}
    exported = {exported_name(n) for n in SERIES}
    assert used <= exported, f"panels query series nobody exports: {sorted(used - exported)}"
    assert exported <= used, f"series without a panel: {sorted(exported - used)}"


def test_plain_classes_record_nothing_without_ray():
    from cluster.level.core import LevelCore
    from cluster.worker import AgentWorker

    assert type(AgentWorker.probe) is AgentProbe and type(LevelCore.probe) is LevelProbe  # the no-op probes


def test_a_live_run_exports_every_series_on_the_metrics_endpoint(ray_session, tmp_path):
    import ray

    ports = {n["MetricsExportPort"] for n in ray.nodes() if n.get("Alive")}
    assert len(ports) == 1, f"one local node expected, got metrics ports {ports}"
    port = ports.pop()
    cfg = load_config("swarm", [*OVERRIDES, "serve.address=127.0.0.1:0"])
    with Run.open(cfg, tmp_path / "metrics-run", Console(file=io.StringIO())) as run:
        ray.get([h.run.remote(6) for h in run.agents.values()])  # pushes (gate max_interval 2), merges
        red = run.servers["swarm/red"]
        version = ray.get(red.status.remote())["version"]
        refused = ray.get(red.push.remote("intruder", 1, version, {"nope": torch.zeros(1)}))
        assert not refused.accepted
        server = MemoryServer(lambda: build_service(cfg, run.namespace), cfg.serve)
        port_rpc = server.start()
        try:
            client = Client(f"127.0.0.1:{port_rpc}", timeout=60)
            client.call("Stats", pb.StatsRequest())
            client.close()
        finally:
            server.stop()
        status = ray.get(red.status.remote())
        assert status["stats"]["merges"] > 0

        # no consensus in 6 steps, and nothing is sent to the inboxes
        unfed = {"swarm_promotions", "swarm_inbox_refusals", *(f"swarm_inbox_{n}" for n in INBOX_COUNTERS)}
        expected = {exported_name(n) for n in SERIES if n not in unfed}
        deadline = time.time() + 120  # Ray exports every few seconds
        while True:
            samples = scrape(port)
            names = {n.removesuffix("_bucket").removesuffix("_count").removesuffix("_sum") for n, _, _ in samples}
            # series of this run only: earlier runs in the session export the same agent and level names
            steps = {a: value(samples, "ray_swarm_agent_steps_total", run=run.namespace, agent=a) for a in run.agents}
            merges = value(samples, "ray_swarm_merges_total", run=run.namespace, level="swarm/red")
            done = expected <= names and all(s == 6 for s in steps.values()) and merges == status["stats"]["merges"]
            if done or time.time() > deadline:
                break
            time.sleep(1)
        assert expected <= names, f"missing series: {sorted(expected - names)}"
        assert all(s == 6 for s in steps.values()), steps  # every step of every agent, once
        agent = sorted(a for a in run.agents if "/red/" in a)[0]
        mine = {"run": run.namespace, "level": "swarm/red"}
        assert value(samples, "ray_swarm_pushes_total", **mine, sender=agent) > 0
        assert value(samples, "ray_swarm_push_bytes_total", **mine, slot="swarm") > 0
        assert value(samples, "ray_swarm_refusals_total", **mine, reason="unknown module") >= 1
        assert merges == status["stats"]["merges"]  # the same merges the status counts
        assert value(samples, "ray_swarm_merge_seconds_count", level="swarm/red") > 0
        assert value(samples, "ray_swarm_rpc_seconds_count", method="Stats", code="OK") >= 1
        assert value(samples, "ray_swarm_agent_server_call_seconds_count", agent=agent, kind="push") > 0
        bpb = value(samples, "ray_swarm_agent_bits_per_byte", run=run.namespace, agent=agent, team="red", domain="toy")
        assert bpb == pytest.approx(ray.get(run.agents[agent].status.remote())["eval_bpb"], rel=1e-6)
