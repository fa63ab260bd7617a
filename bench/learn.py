"""``Learn`` under load: ack latency and throughput with 1 and 8 feeders while the swarm trains, and the
agents' step rate with and without feeding.

    python bench/learn.py            # phases of 20 s
    python bench/learn.py --quick    # phases of 8 s

A small swarm (``configs/swarm.yaml``'s servers, the tiny test model, the synthetic workload) runs on an
embedded Ray and trains without pause (every agent stepping chunk after chunk), with the SharedMemory
service on 127.0.0.1 in this process. Phases, one after another, the same length: no feeding; 1 feeder;
8 feeders (threads, one channel each, each sending one ~1 KiB document per call, round robin over the
agents); no feeding again. Ack latency is a call's time from send to the answer (the documents are
fsynced by then); throughput counts acknowledged documents and bytes. The step rate without feeding is the
mean of the two unfed phases, so a drift of the machine shows in their difference
(``unfed_spread``). Writes bench/results/learn.json (``ratios``: ``ack_p99_ms_8``, target <= 50;
``step_rate_drop``, a fraction, with 8 feeders, target <= 0.10) and learn.md.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from tempfile import TemporaryDirectory

ROOT = Path(__file__).resolve().parents[1]
sys.path[0] = str(ROOT)  # not bench/: keep this directory's names from shadowing packages

import grpc  # noqa: E402
import ray  # noqa: E402
from rich.console import Console  # noqa: E402

from swarm.api.client import Client  # noqa: E402
from swarm.api.proto import memory_pb2 as pb  # noqa: E402
from swarm.api.server import MemoryServer  # noqa: E402
from swarm.api.servicer import build_service  # noqa: E402
from swarm.config import load_config  # noqa: E402
from swarm.ray_session import start_ray  # noqa: E402
from swarm.run.driver import Run  # noqa: E402

TARGET = {"ack_p99_ms_8": 50.0, "step_rate_drop": 0.10}
OVERRIDES = ["workload=synthetic", "pretrain.enabled=false", "levels.rank=8", "model.hidden_size=32",
             "model.intermediate_size=64", "model.num_layers=1", "model.num_heads=2", "workload.batch_size=2",
             "workload.seq_len=32", "run.checkpoint_every=20", "run.eval_every=50", "run.agent_cpus=0.25",
             "learn.max_inbox_bytes=268435456", "serve.address=127.0.0.1:0"]
DOC = ("A note from a user: the build broke after the upgrade; pinning the old version fixed it. " * 12)[:1024]


class Trainer:
    """Steps every agent chunk after chunk in a thread, as the driver does (a host steps its agents together);
    counts the steps in a window."""

    def __init__(self, run: Run, chunk: int = 5) -> None:
        self.units = run.hosts or run.agents  # agent hosts, or one actor per agent (run.agents_per_host 1)
        self.agents, self.chunk, self.steps = len(run.agents), chunk, 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self.stop.is_set():
            ray.get([h.run.remote(self.chunk) for h in self.units.values()])
            self.steps += self.chunk * self.agents

    def rate(self, seconds: float) -> float:
        """Agent steps per second (all agents) over the next ``seconds``."""
        start_steps, start = self.steps, time.perf_counter()
        time.sleep(seconds)
        return (self.steps - start_steps) / (time.perf_counter() - start)


def feed(address: str, agents: list[str], feeders: int, seconds: float) -> dict:
    """``feeders`` threads calling Learn for ``seconds``; latencies of acknowledged calls and counts."""
    latencies: list[float] = []
    refused: dict[str, int] = {}
    lock = threading.Lock()
    end = time.perf_counter() + seconds

    def one(k: int) -> None:
        client = Client(address, timeout=30)
        i = k
        try:
            while time.perf_counter() < end:
                request = pb.LearnRequest(agent=agents[i % len(agents)], text=DOC, source=f"feeder {k}")
                t0 = time.perf_counter()
                try:
                    client.learn([request])
                    dt = time.perf_counter() - t0
                    with lock:
                        latencies.append(dt)
                except grpc.RpcError as e:
                    with lock:
                        refused[e.code().name] = refused.get(e.code().name, 0) + 1
                i += feeders
        finally:
            client.close()

    start = time.perf_counter()
    threads = [threading.Thread(target=one, args=(k,)) for k in range(feeders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    ms = sorted(x * 1000 for x in latencies)
    nbytes = len(DOC.encode()) * len(ms)
    return {"feeders": feeders, "acked": len(ms), "refused": refused, "seconds": elapsed,
            "docs_s": len(ms) / elapsed, "bytes_s": nbytes / elapsed,
            "p50_ms": statistics.median(ms) if ms else None,
            "p99_ms": ms[min(len(ms) - 1, int(0.99 * len(ms)))] if ms else None}


def measure(address: str, trainer: Trainer, agents: list[str], seconds: float) -> dict:
    out: dict = {}
    trainer.rate(2.0)  # warm-up: the agents' first chunks, channels
    feed(address, agents, 1, 1.0)
    out["unfed_1"] = trainer.rate(seconds)
    for n in (1, 8):
        rate: list[float] = []
        probe = threading.Thread(target=lambda box=rate: box.append(trainer.rate(seconds - 1.0)))
        probe.start()  # the rate is read over all but the last second of the phase
        out[f"feed_{n}"] = feed(address, agents, n, seconds)
        probe.join()
        out[f"feed_{n}"]["step_rate"] = rate[0]
    out["unfed_2"] = trainer.rate(seconds)
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    seconds = 8.0 if args.quick else 20.0
    started = start_ray("swarm-bench-learn")
    try:
        with TemporaryDirectory() as tmp:
            cfg = load_config("swarm", [*OVERRIDES, f"run.out_dir={tmp}", "run.name=l"])
            with Run.open(cfg, Path(tmp) / "l", Console(file=io.StringIO())) as run:
                server = MemoryServer(lambda: build_service(cfg, run.namespace), cfg.serve)
                trainer = Trainer(run)
                try:
                    port = server.start()
                    trainer.thread.start()
                    phases = measure(f"127.0.0.1:{port}", trainer, list(run.agents), seconds)
                    trainer.stop.set()
                    trainer.thread.join(timeout=120)
                    learned = {a: r["inbox"]["learned_docs"] for a, r in
                               zip(run.agents, ray.get([h.status.remote() for h in run.agents.values()]), strict=True)}
                finally:
                    trainer.stop.set()
                    server.stop()
    finally:
        if started:
            ray.shutdown()
    unfed = (phases["unfed_1"] + phases["unfed_2"]) / 2
    result = {"cpus": os.cpu_count(), "phase_s": seconds, "document_bytes": len(DOC.encode()),
              "agents": len(learned), "learn_share": cfg.learn.share, **phases,
              "unfed_step_rate": unfed, "unfed_spread": abs(phases["unfed_1"] - phases["unfed_2"]) / unfed,
              "learned_docs": learned,
              "ratios": {"ack_p99_ms_8": phases["feed_8"]["p99_ms"],
                         "step_rate_drop": 1 - phases["feed_8"]["step_rate"] / unfed,
                         "step_rate_drop_1": 1 - phases["feed_1"]["step_rate"] / unfed}}
    result["met"] = {k: result["ratios"][k] is not None and result["ratios"][k] <= v for k, v in TARGET.items()}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "learn.json").write_text(json.dumps(result, indent=2) + "\n")
    r = result
    lines = [f"# Learn under load ({r['cpus']} CPUs, loopback, {r['agents']} agents training, phases of "
             f"{seconds:g} s, {r['document_bytes']}-byte documents)", "",
             "| feeders | acked docs/s | acked KiB/s | ack p50 | ack p99 | refused | agent steps/s |",
             "|---|---|---|---|---|---|---|",
             f"| 0 | - | - | - | - | - | {unfed:.1f} (two phases: {r['unfed_1']:.1f}, {r['unfed_2']:.1f}) |"]
    for n in (1, 8):
        f = r[f"feed_{n}"]
        lines.append(f"| {n} | {f['docs_s']:.0f} | {f['bytes_s'] / 1024:.0f} | {f['p50_ms']:.1f} ms | "
                     f"{f['p99_ms']:.1f} ms | {sum(f['refused'].values())} | {f['step_rate']:.1f} |")
    lines += ["", "| ratio | value | target |", "|---|---|---|",
              f"| ack_p99_ms_8 | {r['ratios']['ack_p99_ms_8']:.1f} | <= {TARGET['ack_p99_ms_8']:g} "
              f"({'met' if r['met']['ack_p99_ms_8'] else 'NOT met'}) |",
              f"| step_rate_drop (8 feeders) | {r['ratios']['step_rate_drop']:.3f} | <= {TARGET['step_rate_drop']:g} "
              f"({'met' if r['met']['step_rate_drop'] else 'NOT met'}) |",
              f"| step_rate_drop (1 feeder) | {r['ratios']['step_rate_drop_1']:.3f} | |",
              f"| unfed_spread (drift between the two unfed phases) | {r['unfed_spread']:.3f} | |"]
    (args.out / "learn.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return result


if __name__ == "__main__":
    main()
