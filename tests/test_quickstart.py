"""docs/quickstart.md, executed command by command (the rules are at the end of that page), so the
walkthrough cannot drift from the code. Sizes shrink (steps / 10, a small model and base); nothing else."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "quickstart.md"
STEP_DIVISOR = 10
SMALL = ["model.hidden_size=32", "model.intermediate_size=64", "model.num_layers=1", "model.num_heads=2",
         "levels.rank=8", "workload.batch_size=2", "workload.seq_len=32", "pretrain.packages=[wsgiref,tomllib,csv]",
         "pretrain.steps=20", "pretrain.batch_size=4", "pretrain.seq_len=64", "pretrain.eval_windows=8",
         "pretrain.warmup=5", "pretrain.vocab_size=400"]
TIMEOUT_S = 600


def blocks(text: str) -> list[tuple[str, str]]:
    """The page's fenced ``sh`` and ``python`` blocks, in order, as (language, body)."""
    return re.findall(r"```(sh|python)\n(.*?)```", text, re.S)


def shrink(line: str, port: int, first_run: bool) -> str:
    """The test's only changes to a command: fewer steps, a small model and base for the first run, a free
    port instead of 50051."""
    line = re.sub(r"run\.steps=(\d+)", lambda m: f"run.steps={max(1, int(m.group(1)) // STEP_DIVISOR)}", line)
    address = f"127.0.0.1:{port}"
    line = re.sub(r"^swarm (serve|query)\b", rf"swarm \1 --address {address}", line)
    if line.startswith("swarm run"):
        extra = (SMALL if first_run else []) + ([f"serve.address={address}"] if "--serve" in line else [])
        background = line.endswith("&")
        line = " ".join([line.rstrip("& "), *extra]) + (" &" if background else "")
    return line


class Job:
    """A background command (``CMD &``) whose output is collected as it comes."""

    def __init__(self, command: str, cwd: Path, env: dict[str, str]) -> None:
        self.command = command
        self.proc = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=cwd, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.output = ""
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.output += line

    def wait_for(self, text: str) -> None:
        deadline = time.time() + TIMEOUT_S
        while text not in self.output:
            assert self.proc.poll() is None, f"{self.command} ended (exit {self.proc.returncode}) before " \
                                             f"printing {text!r}:\n{self.output[-3000:]}"
            assert time.time() < deadline, f"{self.command}: no {text!r} after {TIMEOUT_S} s:\n{self.output[-3000:]}"
            time.sleep(0.2)

    def interrupt(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(timeout=120)
        self.reader.join(timeout=10)
        assert code == 0, f"{self.command} exited {code} on Ctrl-C:\n{self.output[-3000:]}"


def test_the_page_follows_its_own_rules():
    text = DOC.read_text()
    found = blocks(text)
    assert sum(lang == "python" for lang, _ in found) == 1 and len(found) >= 6
    lines = [ln for lang, body in found if lang == "sh" for ln in body.splitlines()]
    assert all(ln.startswith(("swarm ", "kill -INT %1", "cat ", "# wait for: ")) for ln in lines if ln.strip()), lines
    assert shrink("swarm run run.name=x run.steps=100 --serve &", 5, False) == \
        "swarm run run.name=x run.steps=10 --serve serve.address=127.0.0.1:5 &"


@pytest.mark.slow
def test_quickstart_runs_command_by_command(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}", OMP_NUM_THREADS="1",
               PYTHONPATH=str(ROOT), SWARM_CONFIG_DIR=str(ROOT / "configs"))
    job: Job | None = None
    first_run = True
    done: list[str] = []
    timings: list[tuple[str, float]] = []
    for lang, body in blocks(DOC.read_text()):
        started = time.perf_counter()
        if lang == "python":
            out = subprocess.run([sys.executable, "-c", body], cwd=tmp_path, env=env, capture_output=True, text=True,
                                 timeout=TIMEOUT_S)
            assert out.returncode == 0, f"the python block failed after {done}:\n{out.stderr[-3000:]}"
            assert out.stdout.strip().startswith("def loads(s"), out.stdout
            done.append("python block")
            timings.append(("python block", time.perf_counter() - started))
            continue
        for raw in body.splitlines():
            started = time.perf_counter()
            line = raw.strip()
            if not line or (line.startswith("#") and not line.startswith("# wait for:")):
                continue
            if line.startswith("# wait for:"):
                assert job is not None, f"{line!r} with no background job"
                job.wait_for(line.removeprefix("# wait for:").strip())
            elif line == "kill -INT %1":
                assert job is not None, "kill -INT %1 with no background job"
                job.interrupt()
                job = None
            else:
                command = shrink(line, port, first_run and line.startswith("swarm run") and "--resume" not in line)
                first_run = first_run and not (line.startswith("swarm run") and "--resume" not in line)
                if command.endswith("&"):
                    assert job is None, "one background job at a time (%1)"
                    job = Job(command.rstrip("& "), tmp_path, env)
                else:
                    out = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True,
                                         text=True, timeout=TIMEOUT_S)
                    assert out.returncode == 0, (f"{command!r} exited {out.returncode} after {done}:\n"
                                                 f"{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
                    _check(line, out.stdout)
            done.append(line)
            timings.append((line, time.perf_counter() - started))
    assert job is None, "the page leaves a background job running"
    assert (tmp_path / "runs" / "first" / "summary.json").is_file()
    print("\n".join(f"{seconds:6.1f} s  {what}" for what, seconds in timings))  # where the minutes go (-s)


def _check(line: str, stdout: str) -> None:
    """What the page says each command shows, checked where it says something specific."""
    if line.startswith("swarm query generate") and "--agent" not in line:
        assert "the best-trained chain" in stdout and "levels: " in stdout and "{" not in stdout.splitlines()[-1]
    if line.startswith("swarm query levels"):
        assert all(name in stdout for name in ("swarm/text", "swarm/net", "domain/python", "foundation"))
    if line.startswith("cat adapter/README.md"):
        assert "PeftModel.from_pretrained" in stdout and "runs/base" in stdout
