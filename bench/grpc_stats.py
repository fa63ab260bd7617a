"""``Stats`` latency of the query service while the agents train (not idle), and what the probes cost.

    python bench/grpc_stats.py            # Stats for 20 s per measure below
    python bench/grpc_stats.py --quick    # 5 s each

The default swarm (``configs/swarm.yaml``: 4 agents, 4 level servers) runs on an embedded Ray; a
thread keeps every agent inside ``run(chunk)`` for the whole measurement (a new chunk as soon as
one ends), and the SharedMemory service listens on 127.0.0.1. Measured, ``Stats`` p50/p99 with:
1 client; 8 concurrent clients (one channel each, each process of its own sending its next call as
soon as the last returned); the 8 as threads of the service's process (as this benchmark measured
before); 8 processes each polling at ``POLL_HZ``; 8 clients of a bare ``grpc.aio`` server in this
process answering a fixed reply (:class:`BareServer`: the floor Python gRPC sets under the same
load); and 8 clients again once the agents stopped (what the training costs the service). Also the
agent steps taken meanwhile (so the agents were training), a few ``status`` calls straight to a busy
agent actor over Ray (what ``Stats`` awaited per agent before the snapshots), and the per-step cost
of the live agent probe.
Writes bench/results/grpc_stats.json (``stats_8.p99_ms``, target <= 5 ms) and grpc_stats.md.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from tempfile import TemporaryDirectory
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path[0] = str(ROOT)  # not bench/: this file's name would shadow the grpc package

import grpc  # noqa: E402
import ray  # noqa: E402
from rich.console import Console  # noqa: E402

from bench.query_service import percentile  # noqa: E402
from cluster.metrics import LiveAgentProbe  # noqa: E402
from cluster.snapshots import StatusBoard  # noqa: E402
from swarm.api.client import Client  # noqa: E402
from swarm.api.proto import memory_pb2 as pb  # noqa: E402
from swarm.api.server import MemoryServer  # noqa: E402
from swarm.api.servicer import build_service  # noqa: E402
from swarm.config import load_config  # noqa: E402
from swarm.ray_session import start_ray  # noqa: E402
from swarm.run.driver import Run  # noqa: E402

TARGET_P99_MS = 5.0
POLL_HZ = 10.0  # calls per second of a polling client (a page refreshing its counters)


class Trainer:
    """Keeps every agent of ``run`` inside a chunk until :meth:`stop`."""

    def __init__(self, run: Run, chunk: int) -> None:
        self.run, self.chunk = run, chunk
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        inflight = {h.run.remote(self.chunk): aid for aid, h in self.run.agents.items()}
        while inflight:
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=1.0)
            for ref in ready:
                aid = inflight.pop(ref)
                ray.get(ref)
                if not self.done.is_set():
                    inflight[self.run.agents[aid].run.remote(self.chunk)] = aid

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        """Let the chunks in flight end, start no more."""
        self.done.set()
        self.thread.join()


class BareServer:
    """A bare ``grpc.aio`` server on loopback in a thread of this process: ``Stats`` answered with fixed
    bytes (a reply of the real service), no interceptors, no backends. The same clients against it
    give the floor that Python gRPC itself sets under the same load."""

    def __init__(self, reply: bytes) -> None:
        self.reply, self.port = reply, None
        self.ready = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)

    async def _serve(self) -> None:
        async def stats(request: bytes, context) -> bytes:
            return self.reply

        handler = grpc.method_handlers_generic_handler(
            "swarm.v1.SharedMemory", {"Stats": grpc.unary_unary_rpc_method_handler(stats)})
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((handler,))
        self.port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        self.loop, self.server = asyncio.get_running_loop(), server
        self.ready.set()
        await server.wait_for_termination()

    def start(self) -> str:
        self.thread.start()
        self.ready.wait()
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(None), self.loop).result()
        self.thread.join()


def calls(address: str, seconds: float, rate: float | None = None) -> list[float]:
    """Seconds of each Stats call of one client (its own channel) for ``seconds``: back to back, or
    ``rate`` calls per second (a page polling; a late call is sent at once, not skipped)."""
    c, out = Client(address, timeout=60), []
    try:
        c.call("Stats", pb.StatsRequest())  # the channel is up before timing starts
        start = time.perf_counter()
        deadline = start + seconds
        while (t := time.perf_counter()) < deadline:
            c.call("Stats", pb.StatsRequest())
            out.append(time.perf_counter() - t)
            if rate:
                time.sleep(max(0.0, start + len(out) / rate - time.perf_counter()))
    finally:
        c.close()
    return out


def latency(address: str, clients: int, seconds: float, processes: bool = True, rate: float | None = None) -> list:
    """Seconds of each Stats call of ``clients`` clients calling for ``seconds`` (back to back, or
    ``rate`` calls per second each): each in its own process (as ``swarm query`` and other users'
    programs are), or as threads of this process, which also runs the service (then the clients'
    Python competes with the service's for one GIL and the figure is the service's latency plus
    that contention)."""
    pool = ProcessPoolExecutor(clients, mp_context=get_context("spawn")) if processes else ThreadPoolExecutor(clients)
    with pool:
        if processes:
            list(pool.map(time.sleep, [0.01] * clients))  # every process started before timing
        return [x for xs in pool.map(calls, [address] * clients, [seconds] * clients, [rate] * clients) for x in xs]


def steps(board: StatusBoard) -> int:
    """The agents' steps as last published."""
    return sum(s.status["step"] for s in board.read().agents.values())


def summary(xs: list[float]) -> dict:
    return {"p50_ms": 1e3 * percentile(xs, 0.5), "p99_ms": 1e3 * percentile(xs, 0.99),
            "max_ms": 1e3 * max(xs), "calls": len(xs)}


def probe_cost(run: Run, calls: int = 2000) -> dict:
    """Per-step cost of the live agent probe in this process (metrics only: the record is published
    at most every 0.5 s; its cost, a record and one KV put, is measured separately)."""
    spec = run.topology.agents[0]
    board = StatusBoard(run.namespace + "-bench")
    worker = SimpleNamespace(last_eval=3.0, record=lambda: {"agent": spec.id, "step": 1, "cache": {}})
    probe = LiveAgentProbe(spec, board, every_s=3600)
    probe.step(worker, 3.0)  # publishes once, makes the metrics
    t = time.perf_counter()
    for i in range(calls):
        probe.step(worker, 3.0 + i * 1e-6)
    step_us = (time.perf_counter() - t) / calls * 1e6
    t = time.perf_counter()
    for _ in range(50):
        probe.publish(worker)
    publish_ms = (time.perf_counter() - t) / 50 * 1e3
    board.clear()
    return {"step_us": step_us, "publish_ms": publish_ms}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    seconds = 5.0 if args.quick else 20.0
    started = start_ray("swarm-bench-grpc-busy")
    try:
        with TemporaryDirectory() as tmp:
            cfg = load_config("swarm", ["serve.address=127.0.0.1:0", f"run.out_dir={tmp}", "run.name=b",
                                        "run.steps=1000000"])
            with Run.open(cfg, Path(tmp) / "b", Console(file=io.StringIO())) as run:
                board = StatusBoard(run.namespace)
                server = MemoryServer(lambda: build_service(cfg, run.namespace), cfg.serve)
                address = f"127.0.0.1:{server.start()}"
                trainer = Trainer(run, cfg.run.chunk)
                try:
                    trainer.start()
                    time.sleep(5)  # every agent inside its first chunk
                    before, t0 = steps(board), time.time()
                    one = latency(address, 1, seconds)
                    eight = latency(address, 8, seconds)
                    eight_threads = latency(address, 8, seconds, processes=False)
                    eight_polling = latency(address, 8, seconds, rate=POLL_HZ)
                    bare = BareServer(Client(address).call("Stats", pb.StatsRequest()).SerializeToString())
                    eight_bare = latency(bare.start(), 8, seconds)
                    bare.stop()
                    during = steps(board) - before
                    elapsed = time.time() - t0
                    agent = run.agents[run.topology.agents[0].id]
                    direct = []
                    for _ in range(3):  # what the old Stats awaited, once per agent, one after another
                        t = time.perf_counter()
                        ray.get(agent.status.remote())
                        direct.append(time.perf_counter() - t)
                    load = os.getloadavg()
                    trainer.stop()
                    eight_idle = latency(address, 8, seconds)  # the same service, no training beside it
                finally:
                    trainer.stop()
                    server.stop()
                probe = probe_cost(run)
    finally:
        if started:
            ray.shutdown()
    result = {"stats_1": summary(one), "stats_8": summary(eight), "stats_8_threads": summary(eight_threads),
              "stats_8_polling": summary(eight_polling), "poll_hz": POLL_HZ, "stats_8_idle": summary(eight_idle),
              "bare_8": summary(eight_bare),
              "agents": len(run.agents),
              "chunk": cfg.run.chunk, "agent_steps_during": during, "measure_s": elapsed,
              "agent_steps_per_s": during / elapsed, "actor_status_busy_s": direct, "probe": probe,
              "cpus": os.cpu_count(), "loadavg_1m": load[0], "target": {"stats_8.p99_ms": TARGET_P99_MS},
              "met": summary(eight)["p99_ms"] <= TARGET_P99_MS}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "grpc_stats.json").write_text(json.dumps(result, indent=2) + "\n")
    r = result
    lines = [f"# Stats while the agents train ({r['cpus']} CPUs, loopback, load average {r['loadavg_1m']:.1f})", "",
             "| measure | value |", "|---|---|",
             f"| Stats p50 / p99, 1 client | {r['stats_1']['p50_ms']:.2f} / {r['stats_1']['p99_ms']:.2f} ms |",
             f"| Stats p50 / p99, 8 clients | {r['stats_8']['p50_ms']:.2f} / {r['stats_8']['p99_ms']:.2f} ms "
             f"(target <= {TARGET_P99_MS:g} ms: {'met' if r['met'] else 'NOT met'}) |",
             f"| Stats p50 / p99, 8 clients as threads of the service's process | "
             f"{r['stats_8_threads']['p50_ms']:.2f} / {r['stats_8_threads']['p99_ms']:.2f} ms |",
             f"| Stats p50 / p99, 8 clients polling at {r['poll_hz']:g} calls/s each | "
             f"{r['stats_8_polling']['p50_ms']:.2f} / {r['stats_8_polling']['p99_ms']:.2f} ms |",
             f"| a bare grpc.aio server's fixed reply, 8 clients, agents training (the floor) | "
             f"{r['bare_8']['p50_ms']:.2f} / {r['bare_8']['p99_ms']:.2f} ms |",
             f"| Stats p50 / p99, 8 clients, after the agents stopped training | "
             f"{r['stats_8_idle']['p50_ms']:.2f} / {r['stats_8_idle']['p99_ms']:.2f} ms |",
             f"| agents training meanwhile | {r['agents']}, {r['agent_steps_during']} steps in "
             f"{r['measure_s']:.1f} s ({r['agent_steps_per_s']:.2f} steps/s together) |",
             f"| one `status` call to a busy agent over Ray (old Stats: one per agent, in turn) | "
             f"{', '.join(f'{s:.2f}' for s in r['actor_status_busy_s'])} s |",
             f"| live agent probe per step (metrics) | {r['probe']['step_us']:.1f} us |",
             f"| one status publish (record + KV put), at most every 0.5 s | {r['probe']['publish_ms']:.2f} ms |"]
    (args.out / "grpc_stats.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return result


if __name__ == "__main__":
    main()
