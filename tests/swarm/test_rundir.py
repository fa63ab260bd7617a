"""The run directory's status: live, ended, or dead (driver gone, reused pid, silent heartbeat); the stop request."""

import json
import os
import socket
import subprocess
import sys
import time

import psutil

from swarm.cli import main
from swarm.rundir import STALE_S, RunDir, driver_identity, liveness_of


def status(state="running", age_s=0.0, driver=None):
    now = time.time()
    return {"run_dir": "r", "started": now - 100, "updated": now - age_s, "heartbeat": now - age_s, "state": state,
            "steps": None, "agents": {}, "servers": {}, "start_steps": {}, "driver": driver or driver_identity()}


def exited_driver() -> dict:
    """The identity of a real process that has ended (its pid is free or reused, never this one's)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    ident = {"pid": proc.pid, "create_time": psutil.Process(proc.pid).create_time(), "host": socket.gethostname()}
    proc.kill()
    proc.wait()
    return ident


def test_a_live_driver_is_running_and_an_ended_run_keeps_its_state():
    alive = liveness_of(status())
    assert alive.live and alive.state == "running" and alive.heartbeat_age_s < 5
    ended = liveness_of(status("finished", driver=exited_driver()))  # a finished run's driver is meant to be gone
    assert ended.state == "finished" and not ended.live


def test_a_gone_driver_a_reused_pid_and_a_silent_heartbeat_are_dead():
    gone = liveness_of(status(driver=exited_driver()))
    assert gone.state == "dead" and gone.recorded == "running" and "is gone" in gone.why
    reused = liveness_of(status(driver={**driver_identity(), "create_time": 1.0}))  # this pid, another process
    assert reused.state == "dead" and f"pid {os.getpid()}" in reused.why
    elsewhere = {"pid": 1, "create_time": 1.0, "host": "another-host"}  # no pid check there: the heartbeat decides
    assert liveness_of(status(driver=elsewhere)).state == "running"
    silent = liveness_of(status("starting", age_s=STALE_S + 5, driver=elsewhere))
    assert silent.state == "dead" and "heartbeat" in silent.why and silent.heartbeat_age_s > STALE_S
    assert "last heartbeat 3" in silent.describe()


def test_swarm_status_and_stop_report_a_dead_run_with_the_resume_command(tmp_path, capsys):
    run = RunDir(tmp_path)
    run.config.write_text("{}\n")
    run.write_status(status(driver=exited_driver()))
    assert main(["status", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "dead (status says running but its driver" in out and f"swarm run --resume {tmp_path}" in out
    assert main(["stop", str(tmp_path)]) == 1
    assert "nothing to stop" in capsys.readouterr().err
    assert not run.stop_request.exists()  # a dead run is not asked anything
    run.write_status(status("stopped"))
    assert main(["stop", str(tmp_path)]) == 0 and "already stopped (stopped)" in capsys.readouterr().out
    run.status.unlink()
    assert main(["stop", str(tmp_path)]) == 1 and "never started" in capsys.readouterr().err
    assert main(["stop", str(tmp_path / "nope")]) == 1 and "not a run directory" in capsys.readouterr().err


def test_a_stop_request_is_taken_once_and_status_writes_leave_no_temporary_files(tmp_path):
    run = RunDir(tmp_path)
    assert not run.take_stop_request()
    run.request_stop()
    assert json.loads(run.stop_request.read_text())["by_pid"] == os.getpid()
    assert run.take_stop_request() and not run.take_stop_request()
    run.write_status(status())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["status.json"]
    assert run.liveness().live and RunDir(tmp_path / "none").liveness().state == "none"
