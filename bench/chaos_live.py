"""Chaos with real processes: a seeded schedule SIGKILLs agent hosts, level server actors, the query
service and the whole `swarm run` driver of a live run whose stores are on a real S3-compatible server,
while a client feeds the agents documents through ``Learn``; then checks from the stores alone that every
pushed step was applied exactly once and every queued document learned exactly once.

    python bench/chaos_live.py            # 12 kills
    python bench/chaos_live.py --quick    # 5 kills

The run: ``configs/swarm.yaml`` on the tiny test model (4 agents in 2 hosts, 4 level servers), no end
(``run.steps: null``), ``run.storage`` on moto's S3 server on loopback (tests/cluster/s3_server.py),
in a session of its own so that everything it starts can be found. Every 3-6 s (seeded) one kill, once
every agent has stepped since the last one (else a liveness violation after 180 s):

- ``host``: SIGKILL of an agent host's process (Ray restarts it; each agent resumes from its store);
- ``server``: SIGKILL of a level server actor's process (Ray restarts it; it recovers from its journal);
- ``driver``: SIGKILL of `swarm run` itself, every process of its session ended, then
  ``swarm run --resume <the URI>`` (a new Ray; the query service is started again to join it);
- ``query``: SIGKILL of the query service (``swarm serve RUN_DIR`` in a process of its own), started again.

All along, a feeder (bench/chaos_feed.py) sends one document every 1 s to a random agent through the
query service's ``Learn``, through every kill. After the schedule it stops, and the run goes on until every
inbox is drained.

Then ``swarm stop`` and, from the stores alone: every level store audits clean (no step interval applied
twice, no push of unknown shape); each agent's team server holds exactly what the agent accounts for
(``pushed_through``, pushes, pushed steps; an agent stopped while still behind its server's
coverage after a resume has adopted the server's counts) with no gap; every acknowledged document is in
its agent's inbox, and each agent's cursor, documents and bytes learned equal what its inbox holds (each
document learned once); ``swarm checkpoint verify`` passes on every store; no process of the run is left.
Writes bench/results/chaos_live.json (``ratios``: ``violations_per_kill``, target 0) and chaos_live.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[0] = str(ROOT)  # not bench/: keep this directory's names from shadowing packages

from bench.chaos_feed import Feeder, QueryService, check_inboxes  # noqa: E402
from cluster.level.protocol import Coverage  # noqa: E402
from cluster.level.records import audit  # noqa: E402
from swarm.config import config_hash, load_config  # noqa: E402
from swarm.rundir import RunDir  # noqa: E402
from tests.cluster.s3_server import free_port, s3_server, s3_url  # noqa: E402
from tests.cluster.test_runtime import OVERRIDES  # noqa: E402
from tests.swarm.run.test_stop import Driver, in_session  # noqa: E402

KINDS = ("host", "server", "driver", "query")
# learn.share 1: every context takes a queued document (one per 10 steps), so the agents keep up with the feeder
ARGS = [*OVERRIDES, "run.checkpoint_every=8", "run.steps=null", "run.agents_per_host=2", "learn.share=1.0", "--quiet"]
STALL_S = 180.0


def status(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def progressed(run_dir: Path, since: dict[str, int], pid: int) -> dict | None:
    """The status once the driver ``pid`` runs the run and every agent is past its step in ``since``."""
    snap = status(run_dir)
    agents = snap.get("agents") or {}
    if snap.get("state") == "running" and (snap.get("driver") or {}).get("pid") == pid and agents \
            and all(r["step"] > since.get(a, -1) for a, r in agents.items()):
        return snap
    return None


def kill(pid: int, sid: int) -> bool:
    """SIGKILL ``pid`` if it belongs to the run's session (only what this benchmark started)."""
    try:
        if os.getsid(pid) != sid:
            return False
        os.kill(pid, signal.SIGKILL)
        return True
    except ProcessLookupError:
        return False


def schedule(run_dir: Path, uri: str, tmp: Path, kills: int, seed: int,
             query: QueryService) -> tuple[Counter, list[str], Driver, float, Feeder | None]:
    """Start the run, its query service and feeder, make ``kills`` kills; returns (kills by kind, violations,
    the live driver, seconds, the feeder, still feeding)."""
    rng, done, violations = random.Random(seed), Counter(), []
    log = iter(range(1000))
    driver = Driver(["run", "swarm", *ARGS, f"run.storage={s3_url('live')}", f"run.out_dir={tmp}", "run.name=c"],
                    tmp / f"driver-{next(log)}.log")
    start, since, feeder, rejoin = time.perf_counter(), {}, None, True
    while sum(done.values()) < kills:
        deadline = time.time() + STALL_S
        while (snap := progressed(run_dir, since, driver.proc.pid)) is None:
            if driver.proc.poll() is not None or time.time() > deadline:
                state = "alive" if driver.proc.poll() is None else f"exited {driver.proc.returncode}"
                violations.append(f"after kill {sum(done.values())}: the run stopped making progress (driver {state})")
                return done, violations, driver, time.perf_counter() - start, feeder
            time.sleep(0.3)
        if rejoin:  # the run is up (first start, or resumed in a new Ray): the query service joins it
            query.restart()
            rejoin = False
        if feeder is None:
            feeder = Feeder(f"127.0.0.1:{query.port}", sorted(snap["agents"]), seed)
            feeder.start()
        time.sleep(rng.uniform(3.0, 6.0))
        snap = status(run_dir)
        since = {a: r["step"] for a, r in snap["agents"].items()}
        kind = rng.choice(KINDS)
        sid = driver.proc.pid
        if kind == "driver":
            driver.proc.send_signal(signal.SIGKILL)
            driver.proc.wait(timeout=30)
            driver.kill_session()
            driver = Driver(["run", "--resume", uri, "--quiet"], tmp / f"driver-{next(log)}.log")
            since, rejoin = {}, True  # a resumed agent may restart behind the last status: count progress afresh
        elif kind == "query":
            query.restart()
        elif kind == "host":
            pids = sorted({r["pid"] for r in snap["agents"].values() if r.get("pid")})
            if not pids or not kill(rng.choice(pids), sid):
                continue
        else:
            pids = sorted({s["pid"] for s in snap.get("servers", {}).values() if s.get("pid")})
            if not pids or not kill(rng.choice(pids), sid):
                continue
        done[kind] += 1
        print(f"kill {sum(done.values())}: {kind} (agents at {sorted(since.values())})", flush=True)
    return done, violations, driver, time.perf_counter() - start, feeder


def drained(run_dir: Path, driver: Driver, timeout_s: float = STALL_S) -> str | None:
    """Wait until every agent has learned all its inbox holds (by the run's status); the reason if not."""
    run, deadline = RunDir(run_dir), time.time() + timeout_s
    while True:
        snap = status(run_dir)
        agents = snap.get("agents") or {}
        behind = {a: (r.get("inbox") or {}).get("depth_docs") for a, r in agents.items()
                  if (r.get("inbox") or {}).get("depth_docs")}
        if agents and not behind:
            return None
        if driver.proc.poll() is not None or time.time() > deadline:
            return f"inboxes not drained {timeout_s:.0f} s after the feeding stopped: {behind} ({run.path})"
        time.sleep(0.5)


def check(run_dir: Path, uri: str, cfg_hash: str) -> tuple[list[str], int]:
    """The invariants from the stores (see the module doc); (violations, pushes checked)."""
    v, checked = [], 0
    snap = status(run_dir)
    proofs = {}
    for name in snap["servers"]:
        proof = audit(f"{uri}/levels/{name}", cfg_hash)
        proofs[name] = proof
        v += [f"{name}: {x}" for x in proof.violations]
        if proof.unknown:
            v.append(f"{name}: {proof.unknown} journal records of unknown shape")
    for aid, rec in snap["agents"].items():
        held = next((p.coverage[aid] for n, p in proofs.items() if n.startswith("swarm/") and aid in p.coverage),
                    None)
        if held is None:
            v.append(f"{aid}: no team server holds any of its pushes")
            continue
        checked += held.pushes
        # an agent stopped while still behind what its server holds (it resumed from an older checkpoint)
        # relearns those steps but never pushes them: it has adopted the server's counts, not its last step
        behind = rec["step"] < held.last
        mine = Coverage(held.last if behind else rec["pushed_through"], rec["pushes"], rec["pushed_steps"])
        if held != mine:
            v.append(f"{aid}: its team holds {held}, it accounts for {mine}")
        if rec["rejected"] == 0 and held.steps != held.last:
            v.append(f"{aid}: its team holds {held.steps} steps of 1..{held.last} (a gap or a double)")
    verify = subprocess.run([sys.executable, "-m", "swarm", "checkpoint", "verify", str(run_dir)],
                            capture_output=True, text=True, timeout=600)
    if verify.returncode != 0:
        v.append(f"swarm checkpoint verify: exit {verify.returncode}: {verify.stdout[-1500:]}{verify.stderr[-500:]}")
    return v, checked


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="5 kills")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args(argv)
    kills = 5 if args.quick else 12
    with s3_server(), tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        os.chdir(tmp)  # a resume from the URI recreates the run directory from here
        run_dir, uri = tmp / "c", f"{s3_url('live')}/c"
        query = QueryService(run_dir, free_port(), tmp)
        done, violations, driver, seconds, feeder = schedule(run_dir, uri, tmp, kills, args.seed, query)
        deadline = time.time() + STALL_S  # after the last kill: running again (a resumed driver has started)
        while progressed(run_dir, {}, driver.proc.pid) is None and driver.proc.poll() is None \
                and time.time() < deadline:
            time.sleep(0.3)
        if feeder is not None:
            feeder.stop()
            late = drained(run_dir, driver, timeout_s=300.0)
            violations += [late] if late else []
        try:
            stop = subprocess.run([sys.executable, "-m", "swarm", "stop", str(run_dir)], capture_output=True,
                                  text=True, timeout=300)
            try:
                code = driver.end(timeout=300)
            except subprocess.TimeoutExpired:
                code = "none: still running 300 s after the stop"
            if stop.returncode != 0 or code != 0:
                violations.append(f"swarm stop: exit {stop.returncode} ({(stop.stdout + stop.stderr)[-500:]}), "
                                  f"driver exit {code}")
        finally:
            driver.kill_session()
            query.stop()
        left = in_session(driver.proc.pid, wait_s=30)
        if left:
            violations.append(f"{len(left)} processes of the run left behind")
        cfg_hash = config_hash(load_config(run_dir / "config.yaml"))
        found, checked = check(run_dir, uri, cfg_hash)
        violations += found
        snap = status(run_dir)
        if feeder is None:
            violations.append("the feeder never started")
            docs = 0
        else:
            found, docs = check_inboxes(RunDir(run_dir), snap["agents"], feeder)
            violations += found
    total = sum(done.values())
    result = {"command": "python bench/chaos_live.py" + (" --quick" if args.quick else ""), "seed": args.seed,
              "kills": {k: done.get(k, 0) for k in KINDS}, "kills_total": total, "seconds": round(seconds, 1),
              "final_state": snap.get("state"), "agent_steps": {a: r["step"] for a, r in snap["agents"].items()},
              "pushes_checked": checked, "documents_checked": docs,
              "learn_calls": dict(feeder.codes) if feeder else {}, "query_starts": query.starts,
              "learn_failures": dict(feeder.details) if feeder else {},
              "violations": violations,
              "ratios": {"violations_per_kill": len(violations) / max(1, total)}}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "chaos_live.json").write_text(json.dumps(result, indent=2) + "\n")
    md = [f"# Chaos with real processes: {total} SIGKILLs of a live run on S3 (moto on loopback), seed {args.seed}",
          "", f"`{result['command']}`", "", "| measure | value |", "|---|---|",
          *[f"| kills.{k} | {done.get(k, 0)} |" for k in KINDS],
          f"| seconds under the schedule | {result['seconds']} |",
          f"| final state (after `swarm stop`) | {result['final_state']} |",
          f"| agent steps at the end | {', '.join(f'{a} {s}' for a, s in result['agent_steps'].items())} |",
          f"| agent pushes checked in the team stores | {checked} |",
          f"| `Learn` calls, by answer | {', '.join(f'{k} {n}' for k, n in sorted(result['learn_calls'].items()))} |",
          f"| documents checked in the inboxes (each learned once) | {docs} |",
          f"| violations | {len(violations)} (target 0) |", "",
          "Checked from the stores alone: every level store audits clean; each agent's team server holds exactly "
          "what the agent accounts for, steps 1..last once each; every acknowledged document is in its inbox and "
          "every document an inbox holds was learned once (cursor, documents and bytes); `swarm checkpoint "
          "verify` passes; no process of the run is left."]
    md += ["", "## Violations", *[f"- {x}" for x in violations[:20]]] if violations else []
    md += ["", "## `Learn` calls that failed (first answers of each code)",
           *[f"- {code}: {detail!r}" for code, ds in sorted(result["learn_failures"].items()) for detail in ds]]
    (args.out / "chaos_live.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return result


if __name__ == "__main__":
    main()
