"""``swarm run --dashboard``: the page serves the live run from a process beside it, and ends with the run
gracefully (its SIGTERM handler, not Ray's native stack dump) and without leaving a process behind."""

import json
import socket
import time
import urllib.request

import psutil

from tests.cluster.test_runtime import OVERRIDES
from tests.swarm.run.test_stop import TIMEOUT_S, Driver, swarm


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dashboards_of(run_dir) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if "dashboard" in cmd and str(run_dir) in cmd:
            out.append(p)
    return out


def page_lines(out: str) -> str:
    """The page's own lines of a run's output (the run's progress lines crowd them out of its tail)."""
    return "\n".join(line for line in out.splitlines() if "dashboard" in line.lower())


def test_swarm_run_with_dashboard_serves_the_live_run_and_ends_with_it(tmp_path, ray_session):
    # ray_session: a second Ray cluster on this machine besides the run's, as in the whole suite (and for a
    # user with two runs): the page must join the run's own cluster, not whichever Ray guesses is the latest
    port = free_port()
    run_dir = tmp_path / "runs" / "beside"
    # a run without an end, so the page is asked while it learns however slowly the page starts; swarm stop ends it
    driver = Driver(["run", "--dashboard", "--dashboard-address", f"127.0.0.1:{port}", *OVERRIDES,
                     "run.steps=null", f"run.out_dir={tmp_path / 'runs'}", "run.name=beside"], tmp_path / "out.log")
    try:
        deadline, state = time.time() + TIMEOUT_S, None
        while state is None:
            assert time.time() < deadline, page_lines(driver.output) + "\n" + driver.output[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/state", timeout=10) as r:
                    state = json.loads(r.read())
            except OSError:
                assert driver.proc.poll() is None, page_lines(driver.output) + "\n" + driver.output[-3000:]
                time.sleep(0.5)
        names = json.dumps(state["tree"])
        assert all(name in names for name in ("foundation", "swarm/red", "toy/red/a1", "toy/blue/b2")), names
        assert swarm("stop", str(run_dir), "--timeout", str(TIMEOUT_S)).returncode == 0, driver.output[-3000:]
        code = driver.end()
        left = dashboards_of(run_dir)
    finally:
        driver.kill_session()  # whatever of the run's session is left (nothing, when it stopped as it should)
        for p in dashboards_of(run_dir):  # only ours: its command line names this test's run directory
            p.kill()
    out = driver.output
    assert code == 0, out[-3000:]
    assert f"dashboard of {run_dir}: http://127.0.0.1:{port}/" in out
    assert "SIGTERM received" not in out, out[-3000:]  # the page ended by its own handler
    assert not left, [p.info["cmdline"] for p in left]
