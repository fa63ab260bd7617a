"""One ``Learn`` feeder process for bench/learn.py: a gRPC client in its own process, as a real one is
(threads of the benchmark's own process would share the service's interpreter lock).

    python bench/learn_feeder.py ADDRESS AGENTS K FEEDERS SECONDS RATE

Prints ``ready`` once imported and connected, then reads the wall time to start at from stdin (so
the feeders' start-up is over before a phase is timed).

Sends one ~1 KiB document per call, round robin over ``AGENTS`` (comma separated) starting at the
``K``-th, from that time for ``SECONDS``: as fast as answers come (``RATE`` 0), or at
``RATE`` calls per second on a fixed schedule (a late call goes at once; latencies count from the
send). Prints one JSON line: the acknowledged calls' latencies in seconds and the refusals by code.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # not bench/: keep this directory's names from shadowing

import grpc  # noqa: E402

from swarm.api.client import Client  # noqa: E402
from swarm.api.proto import memory_pb2 as pb  # noqa: E402

DOC = ("A note from a user: the build broke after the upgrade; pinning the old version fixed it. " * 12)[:1024]


def main(address: str, agents: list[str], k: int, feeders: int, seconds: float, rate: float) -> dict:
    client = Client(address, timeout=30)
    grpc.channel_ready_future(client.channel).result(timeout=60)
    print("ready", flush=True)
    start_at = float(sys.stdin.readline())
    latencies: list[float] = []
    refused: dict[str, int] = {}
    i, n = k, 0
    time.sleep(max(0.0, start_at - time.time()))
    start = time.perf_counter()
    try:
        while (now := time.perf_counter()) < start + seconds:
            if rate > 0 and (due := start + n / rate) > now:
                time.sleep(due - now)
            request = pb.LearnRequest(agent=agents[i % len(agents)], text=DOC, source=f"feeder {k}")
            t0 = time.perf_counter()
            try:
                client.learn([request])
                latencies.append(time.perf_counter() - t0)
            except grpc.RpcError as e:
                refused[e.code().name] = refused.get(e.code().name, 0) + 1
            i, n = i + feeders, n + 1
    finally:
        client.close()
    return {"latencies": latencies, "refused": refused, "seconds": time.perf_counter() - start}


if __name__ == "__main__":
    a = sys.argv[1:]
    print(json.dumps(main(a[0], a[1].split(","), int(a[2]), int(a[3]), float(a[4]), float(a[5]))))
