"""``swarm dashboard [RUN_DIR]`` and ``swarm run --dashboard``: serve a run's page until Ctrl-C, or beside a run.

``swarm run --dashboard`` starts ``swarm dashboard RUN_DIR --wait`` in a subprocess before the run: it
waits for the run directory to hold a run, serves it live while it learns, and keeps serving it from
its checkpoints once the run has ended (the page says so), until the run's command ends it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from swarm.dashboard.app import DEFAULT_ADDRESS


def token_of(run_dir: str | Path, overrides=()) -> str | None:
    """The run's gRPC bearer token (``serve.token`` of its config with ``overrides``, else ``$SWARM_TOKEN``)."""
    from swarm.api.server import resolve_token
    from swarm.config import load_config
    from swarm.rundir import RunDir

    return resolve_token(load_config(RunDir(run_dir).config, list(overrides)).serve)


def serve_dashboard(run_dir: str | Path, address: str = DEFAULT_ADDRESS, overrides=(), *, wait_s: float = 0.0,
                    echo=print) -> None:
    """Serve ``run_dir``'s dashboard on ``address`` until Ctrl-C or SIGTERM. ``wait_s``: how long to wait
    for the directory to hold a run (``swarm run --dashboard`` starts this before the run). Raises
    ``FileNotFoundError`` (no run there) and ``ValueError`` (a bad address, or a non-loopback one without
    a token)."""
    from swarm.dashboard.app import DashboardServer, check_access
    from swarm.rundir import RunDir

    run = RunDir(run_dir)
    deadline = time.monotonic() + wait_s
    while not run.is_run() and time.monotonic() < deadline:
        time.sleep(0.2)
    run.require_run()
    token = token_of(run_dir, overrides)
    check_access(address, token)
    while wait_s and run.liveness().state == "none" and time.monotonic() < deadline:
        time.sleep(0.2)  # the driver writes its first status right after the config
    server = DashboardServer(run_dir, address, token)
    stopped = []

    def on_sigterm(*_) -> None:
        stopped.append(True)

    if sys.platform != "win32":
        signal.signal(signal.SIGTERM, on_sigterm)
    server.start()
    if sys.platform != "win32":  # again: connecting to a live run's Ray put Ray's own handler in (a stack dump)
        signal.signal(signal.SIGTERM, on_sigterm)
    echo(f"dashboard of {run_dir}: {server.url}" + (" (sign in with the run's token)" if token else "")
         + "; Ctrl-C stops", flush=True)
    try:
        while not stopped and server.thread.is_alive():
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


def start_beside(run_dir: str | Path, address: str = DEFAULT_ADDRESS) -> subprocess.Popen:
    """``swarm run --dashboard``: ``swarm dashboard RUN_DIR --address ADDRESS --wait`` in a subprocess (its
    own Ray connection, so the run's driver is untouched); end it with :func:`stop_beside`."""
    cmd = [sys.executable, "-m", "swarm", "dashboard", str(run_dir), "--address", address, "--wait"]
    return subprocess.Popen(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)


def stop_beside(proc: subprocess.Popen, timeout_s: float = 10.0) -> None:
    """End a dashboard started by :func:`start_beside` (SIGTERM, then SIGKILL after ``timeout_s``)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
