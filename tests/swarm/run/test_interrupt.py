"""Ctrl-C during ``swarm run`` (even one started with SIGINT ignored): the steps in flight finish, everything is
checkpointed, exit 130."""

import json
import os
import signal
import subprocess
import sys
import time

from tests.cluster.test_runtime import OVERRIDES


def test_ctrl_c_checkpoints_every_agent_and_server_and_says_how_to_resume(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # its own embedded Ray
    cmd = [sys.executable, "-m", "swarm", "run", "swarm", *OVERRIDES, "run.steps=100000", "run.chunk=2",
           f"run.out_dir={tmp_path}", "run.name=r", "--quiet"]
    # SIGINT ignored, as a script's background job (`swarm run ... &`) inherits it: Ctrl-C is still honoured
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    status = tmp_path / "r" / "status.json"
    try:
        deadline = time.time() + 180
        while True:
            assert proc.poll() is None, proc.stdout.read()
            assert time.time() < deadline, "the run never got going"
            try:
                snap = json.loads(status.read_text())
                if snap["state"] == "running" and min(r["step"] for r in snap["agents"].values()) >= 2:
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:  # only what this test started
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, out
    assert "swarm run --resume" in out and "Ctrl-C (SIGINT): finishing the steps in flight" in out
    snap = json.loads(status.read_text())
    assert snap["state"] == "interrupted"
    steps = {a: r["step"] for a, r in snap["agents"].items()}
    for agent, step in steps.items():
        ckpts = sorted((tmp_path / "r" / "agents" / agent).glob("ckpt-*"))
        assert ckpts and int(ckpts[-1].name[5:]) == step, (agent, step, ckpts)  # nothing after the checkpoint
    assert list((tmp_path / "r" / "levels").rglob("manifest.json"))
