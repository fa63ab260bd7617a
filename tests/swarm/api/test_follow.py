"""``swarm serve --follow`` and dead runs: a run whose status says running but whose driver is gone is not
followed (it is reported dead, with the resume command), and a followed run that dies is let go."""

import asyncio
import socket
import subprocess
import sys
import time

import psutil

from swarm.api.server import Follower
from swarm.rundir import RunDir, driver_identity


def status(driver: dict) -> dict:
    now = time.time()
    return {"run_dir": "r", "started": now, "updated": now, "heartbeat": now, "state": "running", "steps": 10,
            "agents": {}, "servers": {}, "start_steps": {}, "driver": driver}


def gone_driver() -> dict:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    ident = {"pid": proc.pid, "create_time": psutil.Process(proc.pid).create_time(), "host": socket.gethostname()}
    proc.kill()
    proc.wait()
    return ident


def follow_for(follower: Follower, seconds: float) -> None:
    async def main():
        task = asyncio.create_task(follower.watch_runs())
        await asyncio.sleep(seconds)
        task.cancel()

    asyncio.run(main())


def test_a_dead_run_is_reported_not_followed_and_a_followed_run_that_dies_is_let_go(tmp_path, capsys):
    run = RunDir(tmp_path / "r")
    run.path.mkdir()
    run.write_status(status(gone_driver()))
    made = []
    follower = Follower(str(tmp_path), lambda r: made.append(r) or object(), poll_s=0.05)
    follow_for(follower, 0.3)
    out = capsys.readouterr().out
    assert made == [] and follower.current is None
    assert out.count("is dead (status says running but its driver") == 1  # said once, not every poll
    assert f"swarm run --resume {run.path}" in out

    run.write_status(status(driver_identity()))  # a live driver (this process)
    follow_for(follower, 0.3)
    assert made == [run.path] and follower.current[0] == str(run.path)
    run.write_status(status(gone_driver()))
    follow_for(follower, 0.3)
    assert follower.current is None and "no longer following it" in capsys.readouterr().out
