"""``kill -9`` of a real ``swarm run`` after pushes past the agents' checkpoints, then ``--resume``:
every step an agent pushed is applied to its team level exactly once (checked from the server stores)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from cluster.level.protocol import Coverage
from cluster.level.records import audit
from swarm.config import load_config
from swarm.config.load import config_hash
from tests.cluster.test_runtime import OVERRIDES

pytestmark = pytest.mark.slow  # two real `swarm run` processes: minutes on a small machine

# checkpoints every 8 steps, progress every 5: at the kill most agents have pushed past their last checkpoint.
# The first run has no end (on an idle machine 30 steps take ~2 s: it would finish before the kill);
# the resume gives it one.
# One actor per agent: a killed driver's agent actors stop with it at once, so agents resume behind what their
# server holds (a host finishes the chunk in flight first; tests/cluster/test_host_kill.py covers hosts).
KILL = [*OVERRIDES, "run.checkpoint_every=8", "run.steps=null", "run.agents_per_host=1"]
END = 60


def _stores(run: Path) -> list[Path]:
    return sorted({p.parent for p in (run / "levels").rglob("manifest.json")} |
                  {p.parent for p in (run / "levels").rglob("journal-*.log")})


def _session_pids(sid: int) -> list[int]:
    out = []
    for p in psutil.process_iter():
        try:
            if os.getsid(p.pid) == sid:
                out.append(p.pid)
        except (ProcessLookupError, PermissionError, psutil.Error):
            pass
    return out


def _end_session(sid: int, timeout: float = 60) -> None:
    """Wait for what the killed driver started (its Ray) to end with it; kill what is left, by pid."""
    deadline = time.time() + timeout
    while _session_pids(sid) and time.time() < deadline:
        time.sleep(0.5)
    for pid in _session_pids(sid):  # only processes of the session this test started
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_sigkill_of_the_driver_then_resume_applies_every_pushed_step_exactly_once(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # its own embedded Ray
    run = tmp_path / "r"
    cmd = [sys.executable, "-m", "swarm", "run", "swarm", *KILL, f"run.out_dir={tmp_path}", "run.name=r", "--quiet"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        deadline = time.time() + 240
        while True:
            assert proc.poll() is None, proc.stdout.read()
            assert time.time() < deadline, "the run never got going"
            try:
                snap = json.loads((run / "status.json").read_text())
                if snap["state"] == "running" and min(r["step"] for r in snap["agents"].values()) >= 10:
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)  # kill -9 of `swarm run`: no handler, no checkpoint
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        _end_session(proc.pid)
    cfg_hash = config_hash(load_config("swarm", KILL))
    for store in _stores(run):  # as the kill left them: every pushed interval once, in the journal
        assert audit(store, cfg_hash).violations == [], store

    again = subprocess.run([sys.executable, "-m", "swarm", "run", "--resume", str(run), f"run.steps={END}", "--quiet"],
                           env=env,
                           capture_output=True, text=True, timeout=600, start_new_session=True)
    assert again.returncode == 0, again.stdout + again.stderr
    snap = json.loads((run / "status.json").read_text())
    agents = snap["agents"]
    assert all(r["step"] == END for r in agents.values()), {a: r["step"] for a, r in agents.items()}
    assert sum(r["skipped_steps"] for r in agents.values()) > 0, "no agent resumed behind its server"
    teams = {}
    for store in _stores(run):
        proof = audit(store, cfg_hash)
        assert proof.violations == [] and proof.unknown == 0, (store, proof.violations)
        teams[store.relative_to(run / "levels").as_posix()] = proof.coverage
    for aid, rec in agents.items():
        held = next(c[aid] for c in teams.values() if aid in c)  # its team server's coverage of it
        # what the agent accounts for is what its server holds: pushes, and steps 1..pushed_through once each
        assert held == Coverage(rec["pushed_through"], rec["pushes"], rec["pushed_steps"]), (aid, held, rec)
        if rec["rejected"] == 0:  # nothing refused (a refused push's steps are dropped, never applied)
            assert held.steps == held.last, (aid, held)
    for name, st in snap["servers"].items():
        if name.startswith("swarm/"):  # the issue's check: accepted pushes equal the agents' pushes
            own = [r for a, r in agents.items() if a in teams[name]]
            assert st["stats"]["accepted"] == sum(r["pushes"] for r in own), (name, st["stats"])
            assert st["stats"].get("rejected", {}).get("interval overlap", 0) == 0
