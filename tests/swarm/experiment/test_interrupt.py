"""Ctrl-C during ``swarm experiment``: finished jobs stay, the workers end, the same command resumes."""

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

pytestmark = pytest.mark.slow


def test_ctrl_c_ends_the_workers_and_the_same_command_resumes(tmp_path):
    args = ["experiment", "experiment/ci", f"experiment.out_dir={tmp_path}", f"pretrain.cache_dir={tmp_path / 'base'}",
            "experiment.workers=2"]
    proc = subprocess.Popen([sys.executable, "-m", "swarm", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    jobs = tmp_path / "ci" / "jobs"
    try:
        deadline = time.time() + 240
        while not list(jobs.glob("*.json")):
            assert proc.poll() is None, proc.stdout.read()
            assert time.time() < deadline, "no job finished"
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:  # only what this test started
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, out
    assert "run the same command again to resume" in out
    deadline = time.time() + 20
    while [p for p in psutil.process_iter() if _session(p) == proc.pid] and time.time() < deadline:
        time.sleep(0.2)  # terminated workers are reaped
    assert not [p for p in psutil.process_iter() if _session(p) == proc.pid], "workers outlived Ctrl-C"
    done = sorted(jobs.glob("*.json"))
    assert done and not list(jobs.glob("*.tmp"))
    assert all(json.loads(p.read_text())["id"] for p in done)  # whole files only
    again = subprocess.run([sys.executable, "-m", "swarm", *args], capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"({len(done)} done already)" in again.stdout.replace("\n", " ")
    assert (tmp_path / "ci" / "report.md").is_file()


def _session(p: psutil.Process) -> int | None:
    try:
        return os.getsid(p.pid)
    except (ProcessLookupError, PermissionError):
        return None
