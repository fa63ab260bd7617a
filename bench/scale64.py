"""The 64-agent run (configs/scale64.yaml) with ``swarm run``, watched from outside: wall time, resident
memory of every process of the run (peak psutil RSS, sampled every second) and merges per second at
every level server. Writes bench/results/scale64.json (with ``ratios``) and bench/results/scale64.md.

    nice -n 10 .venv/bin/python bench/scale64.py [overrides ...]     # e.g. run.agents_per_host=16
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

RESULTS = Path(__file__).parent / "results"


def _role(p: psutil.Process) -> str:
    """A process's part in the run: its Ray proctitle (``ray::AgentHostActor`` ...) or its program."""
    try:
        cmd = p.cmdline()
    except psutil.Error:
        return "?"
    title = " ".join(cmd)
    for key in ("AgentHostActor", "AgentActor", "LevelServerActor", "dashboard_agent", "runtime_env_agent",
                "log_monitor", "monitor.py", "dashboard.py", "default_worker.py"):
        if key in title:
            return f"ray::{key}" if key[0].isupper() else f"ray {key}"
    if cmd[1:4] == ["-m", "swarm", "run"]:
        return "driver (swarm run)"
    return Path(cmd[0]).name if cmd else p.name()


def main(overrides: list[str]) -> dict:
    """Run ``swarm run scale64`` to the end, sampling memory; returns the result record."""
    out_dir = Path(tempfile.mkdtemp(prefix="scale64-"))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # its own local Ray
    cmd = [sys.executable, "-m", "swarm", "run", "scale64", f"run.out_dir={out_dir}", "run.name=r", "--quiet",
           *overrides]
    t0 = time.time()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    peak: dict[int, tuple[str, int]] = {}  # pid -> (role, peak RSS bytes)
    while proc.poll() is None:
        for p in psutil.process_iter():
            try:
                if os.getsid(p.pid) != proc.pid:
                    continue
                rss = p.memory_info().rss
            except (psutil.Error, ProcessLookupError, PermissionError):
                continue
            old = peak.get(p.pid, ("", 0))[1]
            peak[p.pid] = (_role(p), max(old, rss))  # again each time: a Ray worker becomes an actor later
        time.sleep(1.0)
    log = proc.stdout.read()
    wall = time.time() - t0
    run = out_dir / "r"
    summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").is_file() else {}
    status = json.loads((run / "status.json").read_text()) if (run / "status.json").is_file() else {}
    chunks = [json.loads(line)["time"] for line in (run / "metrics.jsonl").read_text().splitlines()
              if '"kind": "agent"' in line] if (run / "metrics.jsonl").is_file() else []
    driving = (max(chunks) - status["ready"]) if chunks and "ready" in status else wall  # to the last chunk's end
    finish = status.get("updated", 0) - max(chunks) if chunks else None  # final checkpoints and the summary
    servers = {s["level"]: {"merges": s["merges"], "merges_per_s": s["merges"] / driving, "accepted": s["accepted"]}
               for s in summary.get("servers", [])}
    procs = sorted(({"pid": pid, "role": role, "rss_mb": rss / 2**20} for pid, (role, rss) in peak.items()),
                   key=lambda r: -r["rss_mb"])
    hosts = [p for p in procs if p["role"] == "ray::AgentHostActor"]
    steps = sum(a["steps"] for a in summary.get("agents", []))
    n_agents = max(1, len(summary.get("agents", [])))
    result = {"command": " ".join(["swarm run scale64", *overrides]), "returncode": proc.returncode,
              "state": summary.get("state"), "agents": len(summary.get("agents", [])), "agent_steps": steps,
              "wall_s": wall, "driving_s": driving, "finish_s": finish,
              "startup_s": status.get("ready", t0) - status.get("started", t0),
              "agent_steps_per_s": steps / driving if driving else None, "servers": servers, "processes": procs,
              "total_rss_mb": sum(p["rss_mb"] for p in procs),
              "ratios": {"host_rss_mb_per_agent": sum(p["rss_mb"] for p in hosts) / n_agents
                         if hosts else None},
              "log_tail": log[-3000:]}
    write(result)
    return result


def write(result: dict) -> None:
    """bench/results/scale64.json and scale64.md of ``result``."""
    wall, driving, steps, servers, procs = (result[k] for k in ("wall_s", "driving_s", "agent_steps", "servers",
                                                                 "processes"))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "scale64.json").write_text(json.dumps(result, indent=2) + "\n")
    md = [f"# swarm run scale64 ({result['agents']} agents)", "",
          f"`{result['command']}`: state {result['state']}, wall {wall:.0f} s (startup {result['startup_s']:.0f} s, "
          f"stepping {driving:.0f} s, checkpoints and summary {result.get('finish_s') or 0:.0f} s), "
          f"{steps} agent steps ({result['agent_steps_per_s'] or 0:.2f}/s)", "",
          "| server | merges | merges/s | pushes accepted |", "|---|---|---|---|"]
    md += [f"| {n} | {s['merges']} | {s['merges_per_s']:.3f} | {s['accepted']} |" for n, s in servers.items()]
    md += ["", "| process | pid | peak RSS (MiB) |", "|---|---|---|"]
    md += [f"| {p['role']} | {p['pid']} | {p['rss_mb']:.0f} |" for p in procs]
    md += ["", f"Total peak RSS (sum over processes): {result['total_rss_mb']:.0f} MiB"]
    (RESULTS / "scale64.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    r = main(sys.argv[1:])
    print((RESULTS / "scale64.md").read_text())
    sys.exit(0 if r["returncode"] == 0 else 1)
