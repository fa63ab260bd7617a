"""The query service's latency and throughput on loopback, against a raw-bytes baseline in the same run.

    python bench/query_service.py            # 400 Stats calls per client setting, 30 GetLevel transfers
    python bench/query_service.py --quick    # 100 and 10

A small swarm (``configs/swarm.yaml``'s servers; agents idle) runs on an embedded Ray, and
the SharedMemory service listens on 127.0.0.1. Stats latency: p50/p99 with 1 and with 8
concurrent clients (threads, one channel each). GetLevel throughput: MB/s of a whole
level (since_version=-1), against a raw RPC on the same server that streams the same
number of bytes in the same chunk sizes without touching Ray or the wire format.
Writes bench/results/query_service.json ("ratios": getlevel_over_raw_throughput, target >= 0.5)
and query_service.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from tempfile import TemporaryDirectory

ROOT = Path(__file__).resolve().parents[1]
sys.path[0] = str(ROOT)  # not bench/: this file's name would shadow the grpc package

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

TARGET = {"getlevel_over_raw_throughput": 0.5}


def raw_handler(total: int, chunk: int):
    """``/bench.Raw/Get``: streams ``total`` bytes in ``chunk``-sized messages (no Ray, no encoding)."""
    blob = os.urandom(chunk)

    async def get(request, context):
        sent = 0
        while sent < total:
            n = min(chunk, total - sent)
            yield blob[:n]
            sent += n

    return grpc.method_handlers_generic_handler("bench.Raw", {"Get": grpc.unary_stream_rpc_method_handler(
        get, request_deserializer=None, response_serializer=None)})


def percentile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def stats_latency(address: str, clients: int, calls: int) -> list[float]:
    def worker(_):
        c = Client(address, timeout=30)
        out = []
        try:
            for _ in range(calls):
                t = time.perf_counter()
                c.call("Stats", pb.StatsRequest())
                out.append(time.perf_counter() - t)
        finally:
            c.close()
        return out

    with ThreadPoolExecutor(clients) as pool:
        return [x for xs in pool.map(worker, range(clients)) for x in xs]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    calls, transfers = (100, 30) if args.quick else (400, 200)
    started = start_ray("swarm-bench-grpc")
    try:
        with TemporaryDirectory() as tmp:
            cfg = load_config("swarm", ["serve.address=127.0.0.1:0", f"run.out_dir={tmp}", "run.name=g"])
            uncached = dataclasses.replace(cfg, serve=dataclasses.replace(cfg.serve, level_ttl_ms=0.0))
            with Run.open(cfg, Path(tmp) / "g", Console(file=io.StringIO())) as run:
                level = "swarm/text"
                nbytes = sum(t.numel() * 4 for t in ray.get(run.servers[level].pull.remote(-1))["tensors"].values())
                servers = [MemoryServer(lambda c=c: build_service(c, run.namespace), c.serve,
                                        [raw_handler(nbytes, c.serve.chunk_bytes)]) for c in (cfg, uncached)]
                try:
                    ports = [s.start() for s in servers]
                    result = measure(f"127.0.0.1:{ports[0]}", level, nbytes, calls, transfers)
                    no_ttl = measure(f"127.0.0.1:{ports[1]}", level, nbytes, calls // 4, transfers)
                    result["level_ttl_ms"] = cfg.serve.level_ttl_ms
                    result["without_ttl"] = {k: no_ttl[k] for k in ("getlevel_mb_s", "raw_mb_s", "ratios")}
                    ttl0 = no_ttl["ratios"]["getlevel_over_raw_throughput"]
                    result["ratios"]["getlevel_over_raw_throughput_ttl0"] = ttl0
                finally:
                    for s in servers:
                        s.stop()
    finally:
        if started:
            ray.shutdown()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "query_service.json").write_text(json.dumps(result, indent=2) + "\n")
    r = result
    lines = [f"# gRPC query service ({os.cpu_count()} CPUs, loopback)", "",
             "| measure | value |", "|---|---|",
             f"| Stats p50 / p99, 1 client | {r['stats_1']['p50_ms']:.2f} / {r['stats_1']['p99_ms']:.2f} ms |",
             f"| Stats p50 / p99, 8 clients | {r['stats_8']['p50_ms']:.2f} / {r['stats_8']['p99_ms']:.2f} ms |",
             f"| GetLevel ({r['level_bytes'] / 2**20:.2f} MiB) | {r['getlevel_mb_s']:.0f} MB/s |",
             f"| GetLevel + decoding into tensors | {r['getlevel_decoded_mb_s']:.0f} MB/s |",
             f"| raw bytes, same size and chunks | {r['raw_mb_s']:.0f} MB/s |",
             f"| getlevel_over_raw_throughput (level_ttl_ms {r['level_ttl_ms']:g}) | "
             f"{r['ratios']['getlevel_over_raw_throughput']:.2f} "
             f"(target >= {TARGET['getlevel_over_raw_throughput']}: {'met' if r['met'] else 'NOT met'}) |",
             f"| the same with level_ttl_ms 0 (a Ray round trip per call) | "
             f"{r['ratios']['getlevel_over_raw_throughput_ttl0']:.2f} |"]
    (args.out / "query_service.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return result


def measure(address: str, level: str, nbytes: int, calls: int, transfers: int) -> dict:
    stats_latency(address, 1, 10)  # warm-up: channels, first Ray calls
    one = stats_latency(address, 1, calls)
    eight = stats_latency(address, 8, calls // 4)
    client = Client(address, timeout=60)
    raw = client.channel.unary_stream("/bench.Raw/Get", request_serializer=None, response_deserializer=None)
    try:
        client.level(level)
        list(raw(b""))

        request = pb.GetLevelRequest(name=level, since_version=-1)
        fns = {"get": lambda: sum(len(c.payload) for c in client.call("GetLevel", request)),
               "decoded": lambda: client.level(level),  # plus decoding into tensors on the client
               "raw": lambda: sum(len(m) for m in raw(b""))}
        times = {k: [] for k in fns}
        for _ in range(transfers):  # interleaved, so all three see the same machine state
            for k, fn in fns.items():
                t = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t)
        get_s, decoded_s, raw_s = (statistics.median(times[k]) for k in ("get", "decoded", "raw"))
    finally:
        client.close()
    summary = lambda xs: {"p50_ms": 1e3 * percentile(xs, 0.5), "p99_ms": 1e3 * percentile(xs, 0.99),  # noqa: E731
                          "calls": len(xs)}
    ratio = (nbytes / get_s) / (nbytes / raw_s)
    return {"stats_1": summary(one), "stats_8": summary(eight), "level": level, "level_bytes": nbytes,
            "getlevel_s": get_s, "raw_s": raw_s, "getlevel_mb_s": nbytes / get_s / 1e6,
            "getlevel_decoded_mb_s": nbytes / decoded_s / 1e6, "raw_mb_s": nbytes / raw_s / 1e6,
            "ratios": {"getlevel_over_raw_throughput": ratio, "decoded_over_raw_throughput": raw_s / decoded_s},
            "targets": TARGET,
            "met": ratio >= TARGET["getlevel_over_raw_throughput"]}


if __name__ == "__main__":
    main()
