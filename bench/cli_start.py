"""How fast the light commands start: ``swarm --help``, ``swarm status`` and ``swarm query stats``.

    python bench/cli_start.py                 # 7 runs of each command, on a fresh small run (~1-2 min)
    python bench/cli_start.py --quick         # 3 runs of each
    python bench/cli_start.py --run RUN_DIR   # measure on an existing run instead of making one

Each command runs as a user runs it: a new ``python -m swarm ...`` process, timed from spawn to
exit (wall clock, median and max over the repetitions; the interpreter's own start, ``python -c
pass``, is measured alongside as the floor). ``status`` reads a real run's ``status.json``;
``query stats`` asks ``swarm serve RUN_DIR`` (started once, outside the timing) over loopback.
Without ``--run`` a small run (4 agents, 10 steps, config-built base) is made first under a
temporary directory. A second pass with ``-X importtime`` lists which heavy modules each
command loads. Writes bench/results/cli_start.json ("ratios": each median over the 1.5 s
target) and cli_start.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 1.5
HEAVY = ("torch", "transformers", "ray")
SMALL_RUN = ["workload=synthetic", "pretrain.enabled=false", "levels.rank=8", "model.hidden_size=32",
             "model.intermediate_size=64", "model.num_layers=1", "model.num_heads=2", "workload.batch_size=2",
             "workload.seq_len=32", "run.steps=10", "run.chunk=5", "run.eval_every=10", "run.checkpoint_every=10",
             "server.window=2", "server.checkpoint_every=2"]


def _swarm(*args: str) -> list[str]:
    return [sys.executable, "-m", "swarm", *args]


def _time(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def _heavy_loaded(cmd: list[str], env: dict[str, str]) -> list[str]:
    """The heavy top-level modules ``cmd`` imports (from ``-X importtime``)."""
    out = subprocess.run([cmd[0], "-X", "importtime", *cmd[1:]], cwd=ROOT, env=env, capture_output=True, text=True)
    loaded = {line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time")}
    return [m for m in HEAVY if m in loaded]


def _make_run(out_dir: Path, env: dict[str, str]) -> Path:
    subprocess.run(_swarm("run", "--quiet", f"run.out_dir={out_dir}", "run.name=bench", *SMALL_RUN), cwd=ROOT,
                   env=env, check=True, stdout=subprocess.DEVNULL)
    return out_dir / "bench"


def _serve(run_dir: Path, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(_swarm("serve", str(run_dir), "--address", "127.0.0.1:0"), cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if line.startswith("serving "):
            return proc, line.split(" on ")[1].split(";")[0]
    raise RuntimeError(f"swarm serve {run_dir} ended without serving (exit {proc.wait()})")


def main() -> None:
    """Measure, print the table and write the results."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--run", help="an existing run directory (default: make a small one)")
    args = ap.parse_args()
    reps = 3 if args.quick else 7
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        made = args.run is None
        run_dir = Path(args.run) if args.run else _make_run(Path(tmp), env)
        server, address = _serve(run_dir, env)
        try:
            commands = {"python -c pass": [sys.executable, "-c", "pass"],
                        "swarm --help": _swarm("--help"),
                        "swarm status": _swarm("status", str(run_dir)),
                        "swarm query stats": _swarm("query", "--address", address, "stats")}
            _time(commands["swarm query stats"], env)  # the service's first answer loads nothing later ones need
            times: dict[str, list[float]] = {name: [] for name in commands}
            for _ in range(reps):  # interleaved: machine noise hits every command alike
                for name, cmd in commands.items():
                    times[name].append(_time(cmd, env))
            heavy = {name: _heavy_loaded(cmd, env) for name, cmd in commands.items() if name.startswith("swarm")}
        finally:
            server.terminate()
            server.wait(timeout=30)
    rows = {name: {"median_s": statistics.median(ts), "max_s": max(ts), "runs": len(ts),
                   **({"heavy_modules": heavy[name]} if name in heavy else {})} for name, ts in times.items()}
    ratios = {f"{name.removeprefix('swarm ').replace(' ', '_').replace('--', '')}_over_target":
              rows[name]["median_s"] / TARGET_S for name in commands if name.startswith("swarm")}
    result = {"commands": rows, "ratios": ratios, "targets": {k: 1.0 for k in ratios}, "target_s": TARGET_S,
              "met": all(r <= 1.0 for r in ratios.values()), "run": "a fresh small run" if made else str(run_dir),
              "cpus": os.cpu_count(), "python": sys.version.split()[0]}
    lines = ["# CLI start times (bench/cli_start.py)", "",
             f"{reps} runs per command, interleaved, on {os.cpu_count()} CPUs; wall clock from spawn to exit.", "",
             "| command | median (s) | max (s) | heavy modules loaded |", "|---|---:|---:|---|"]
    for name, r in rows.items():
        lines.append(f"| `{name}` | {r['median_s']:.2f} | {r['max_s']:.2f} | "
                     f"{', '.join(r.get('heavy_modules', [])) or ('none' if name in heavy else '-')} |")
    lines += ["", f"Target: each median <= {TARGET_S} s: " + ("met" if result["met"] else "not met") + "."]
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "cli_start.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "cli_start.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
