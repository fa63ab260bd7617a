"""Real signals to a real ``swarm run`` (a subprocess with its own embedded Ray, one agent): ``swarm stop``
on a run without an end, then SIGTERM on its resume, each checkpointing; a second signal stops at once
with the stores intact; SIGKILL leaves a run that ``swarm status`` calls dead. (Ctrl-C with SIGINT
inherited ignored: test_interrupt.py.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.cluster.test_runtime import OVERRIDES

pytestmark = pytest.mark.slow
ONE_AGENT = [*OVERRIDES, "workload.topology={toy: {red: [a1]}}", "run.chunk=2"]  # 3 level servers, 1 agent
TIMEOUT_S = 300


class Driver:
    """``python -m swarm ARGS`` in its own session (so every process it starts can be found and ended),
    output to a file; ``sigint_ignored``: started as a script's background job would be (SIGINT ignored)."""

    def __init__(self, args: list[str], log: Path, sigint_ignored: bool = False) -> None:
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # its own embedded Ray
        env["OMP_NUM_THREADS"] = "1"
        handler = signal.SIG_IGN if sigint_ignored else signal.SIG_DFL
        self.log = log
        with open(log, "w") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "swarm", *args], env=env, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True,
                                         preexec_fn=lambda: signal.signal(signal.SIGINT, handler))

    @property
    def output(self) -> str:
        return self.log.read_text()

    def wait_for(self, status: Path, ready) -> dict:
        """The first status snapshot for which ``ready(snapshot)`` holds (the driver must stay alive)."""
        deadline = time.time() + TIMEOUT_S
        while True:
            assert self.proc.poll() is None, self.output[-3000:]
            assert time.time() < deadline, f"not ready after {TIMEOUT_S} s:\n{self.output[-3000:]}"
            try:
                snap = json.loads(status.read_text())
                if ready(snap):
                    return snap
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.3)

    def end(self, timeout: float = TIMEOUT_S) -> int:
        """Wait for the driver's exit code; whatever of its session is left is killed (only what it started)."""
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self.kill_session()

    def kill_session(self) -> None:
        for p in in_session(self.proc.pid):
            try:
                p.kill()
            except psutil.Error:
                pass
        if self.proc.poll() is None:
            self.proc.wait(timeout=30)


def in_session(sid: int, wait_s: float = 0.0) -> list[psutil.Process]:
    """The processes still in session ``sid`` after waiting up to ``wait_s`` for them to go."""
    deadline = time.time() + wait_s
    while True:
        left = []
        for p in psutil.process_iter():
            try:
                if os.getsid(p.pid) == sid and p.status() != psutil.STATUS_ZOMBIE:
                    left.append(p)
            except (ProcessLookupError, PermissionError, psutil.Error):
                pass
        if not left or time.time() >= deadline:
            return left
        time.sleep(0.3)


def swarm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "swarm", *args], capture_output=True, text=True, timeout=TIMEOUT_S)


def steps(snap: dict) -> dict[str, int]:
    return {a: r["step"] for a, r in snap["agents"].items()}


def checkpointed_steps(run_dir: Path, agents) -> dict[str, int]:
    return {a: int(sorted((run_dir / "agents" / a).glob("ckpt-*"))[-1].name[5:]) for a in agents}


def test_swarm_stop_then_sigterm_checkpoint_and_resume_and_a_second_signal_stops_at_once(tmp_path):
    run_dir, status = tmp_path / "r", tmp_path / "r" / "status.json"

    def running_past(before: dict[str, int]):  # running, and every agent a chunk past ``before``
        return lambda s: s["state"] == "running" and s["agents"] and \
            all(r["step"] > before.get(a, 0) for a, r in s["agents"].items())

    # 1. no end (run.steps=null), stopped by `swarm stop`: checkpoint, summary, exit 0
    first = Driver(["run", "swarm", *ONE_AGENT, "run.steps=null", f"run.out_dir={tmp_path}", "run.name=r", "--quiet"],
                   tmp_path / "1.log")
    try:
        first.wait_for(status, running_past({}))
        stop = swarm("stop", str(run_dir), "--timeout", str(TIMEOUT_S))
        assert stop.returncode == 0 and f"{run_dir} stopped; summary:" in stop.stdout, stop.stdout + stop.stderr
        assert first.end() == 0, first.output[-3000:]
    finally:
        first.kill_session()
    snap = json.loads(status.read_text())
    assert (snap["state"], snap["stopped_by"], snap["steps"]) == ("stopped", "swarm stop", None)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["state"] == "stopped" and [a["steps"] for a in summary["agents"]] == list(steps(snap).values())
    assert checkpointed_steps(run_dir, snap["agents"]) == steps(snap) and not (run_dir / "stop-request.json").exists()
    assert "swarm stop: finishing the steps in flight" in first.output
    assert swarm("stop", str(run_dir)).stdout.strip() == f"{run_dir} already stopped (stopped)"
    after_stop = steps(snap)

    # 2. resumed, then SIGTERM (what systemd, Kubernetes and `ray job stop` send): the same, exit 143
    second = Driver(["run", "--resume", str(run_dir), "--quiet"], tmp_path / "2.log")
    try:
        live = second.wait_for(status, running_past(after_stop))
        assert all(r["resumed_from"] == after_stop[a] for a, r in live["agents"].items())  # from the checkpoints
        second.proc.send_signal(signal.SIGTERM)
        assert second.end() == 143, second.output[-3000:]
    finally:
        second.kill_session()
    snap = json.loads(status.read_text())
    assert (snap["state"], snap["stopped_by"]) == ("interrupted", "SIGTERM")
    assert "SIGTERM: finishing the steps in flight" in second.output and "Traceback" not in second.output
    assert f"continue with: swarm run --resume {run_dir}" in second.output
    assert checkpointed_steps(run_dir, snap["agents"]) == steps(snap)
    assert all(s > after_stop[a] for a, s in steps(snap).items())
    assert len(list((run_dir / "levels").rglob("manifest.json"))) >= 3  # every level server checkpointed
    assert not list(run_dir.glob(".*.tmp"))  # no half-written status or summary
    versions = {name: st["version"] for name, st in snap["servers"].items()}

    # 3. resumed with a long chunk, SIGTERM then Ctrl-C: the second signal stops it at once, no final checkpoint
    third = Driver(["run", "--resume", str(run_dir), "run.chunk=500", "--quiet"], tmp_path / "3.log")
    try:
        third.wait_for(status, lambda s: s["state"] == "running")
        third.proc.send_signal(signal.SIGTERM)
        while "SIGTERM: finishing the steps in flight" not in third.output:
            assert third.proc.poll() is None, third.output[-3000:]
            time.sleep(0.1)
        third.proc.send_signal(signal.SIGINT)
        assert third.proc.wait(timeout=TIMEOUT_S) == 143, third.output[-3000:]
        assert not in_session(third.proc.pid, wait_s=30), "Ray processes outlived the forced stop"
    finally:
        third.kill_session()
    assert "SIGTERM: stopped at once, without a final checkpoint" in third.output
    assert f"continue with: swarm run --resume {run_dir}" in third.output
    snap = json.loads(status.read_text())
    assert (snap["state"], snap["stopped_by"]) == ("aborted", "SIGTERM")
    assert not list(run_dir.glob(".*.tmp"))
    from swarm.api.backends import CheckpointLevels  # the stores recover: every level server, from a copy
    from swarm.config import load_config
    from swarm.rundir import RunDir

    levels = CheckpointLevels(load_config(run_dir / "config.yaml"), RunDir(run_dir))
    try:
        assert levels.state == "aborted" and all(levels.versions[n] >= v for n, v in versions.items()), levels.versions
    finally:
        levels.close()


def test_a_run_killed_with_sigkill_is_reported_dead(tmp_path):
    run_dir, status = tmp_path / "k", tmp_path / "k" / "status.json"
    driver = Driver(["run", "swarm", *ONE_AGENT, "run.steps=100", f"run.out_dir={tmp_path}", "run.name=k",
                     "--quiet"], tmp_path / "k.log")
    try:  # its status carries its pid from the first second (while Ray starts)
        snap = driver.wait_for(status, lambda s: s["driver"]["pid"] == driver.proc.pid)
        assert snap["state"] in ("starting", "running")
        os.killpg(driver.proc.pid, signal.SIGKILL)
        driver.proc.wait(timeout=30)
    finally:
        driver.kill_session()
    shown = swarm("status", str(run_dir))
    assert shown.returncode == 0, shown.stderr
    assert f"dead (status says {snap['state']} but its driver (pid {driver.proc.pid}) is gone" in shown.stdout
    assert f"continue with: swarm run --resume {run_dir}" in shown.stdout
    stop = swarm("stop", str(run_dir))
    assert stop.returncode == 1 and "nothing to stop" in stop.stderr
