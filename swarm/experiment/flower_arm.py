"""The ``flower_fedavg`` arm: flat FedAvg of a PEFT LoRA run by Flower's own simulation engine.

Our ``fedavg`` arm is our code end to end; this arm checks it against an implementation no one here
wrote. Flower pins versions that conflict with ``.venv`` (ray==2.55.1, protobuf<7, ...), so it runs in
its own environment ``.venv-flower`` (``bash infra/setup.sh flower``) as a subprocess, and the two
sides exchange files in a job directory:

- ``spec.json``: the base checkpoint, agents and their evaluation groups, steps, batch, local steps per
  round (our push interval), learning rate and Adam constants, LoRA rank / alpha / target modules;
- ``inputs.safetensors``: every agent's training batches, taken from the very ``Workload`` streams
  our arms read (same seed, same windows, same order), and the held-out window sets of
  :func:`swarm.experiment.scenarios.groups` built by :func:`scenarios.group_windows`, as ``transfer``
  builds them;
- ``result.json``: written by :mod:`swarm.experiment.flower_app` in the shape of a team job's ``team``
  part, so the report shows the arm next to ``fedavg``.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from agents.text import Windows
from agents.topology import AgentSpec

ARM = "flower_fedavg"
SETUP = "bash infra/setup.sh flower"
ROOT = Path(__file__).resolve().parents[2]  # the checkout: swarm/ and layers/ for the subprocess
PYTHON_ENV = "SWARM_FLOWER_PYTHON"  # overrides .venv-flower/bin/python


def flower_python() -> Path:
    """The interpreter of ``.venv-flower`` (or ``$SWARM_FLOWER_PYTHON``).

    Raises:
        RuntimeError: it does not exist; the message names the setup command.
    """
    path = Path(os.environ.get(PYTHON_ENV) or ROOT / ".venv-flower" / "bin" / "python")
    if not path.is_file():
        raise RuntimeError(f"{ARM}: the Flower environment's interpreter {path} is missing; create it with "
                           f"`{SETUP}` (infra/setup_flower.sh), or point ${PYTHON_ENV} at one")
    return path


class Streams:
    """What :func:`scenarios.groups` and :func:`scenarios.group_windows` read of a Simulation: the agents
    and their held-out windows, from their own ``Workload`` streams."""

    def __init__(self, specs: list[AgentSpec], held: dict[str, Windows]) -> None:
        self.specs = {s.id: s for s in specs}
        self.agent_ids = [s.id for s in specs]
        self._held = held

    def held_out(self, aid: str) -> Windows:
        """Agent ``aid``'s own held-out windows."""
        return self._held[aid]


def write_inputs(cfg, seed: int, work: Path) -> dict[str, Any]:
    """Write ``spec.json`` and ``inputs.safetensors`` of the job ``cfg`` (a ``job_config`` of this arm) into
    ``work``; returns the spec. A base built from config (no ``model.name_or_path``) is saved there too."""
    from safetensors.torch import save_file

    from agents.model import build_model
    from agents.text import load_tokenizer
    from agents.topology import agent_specs
    from agents.workload import Workload
    from layers.targets import select_targets
    from swarm.experiment import scenarios

    exp, wl = cfg.experiment, cfg.workload
    model = build_model(cfg.model)
    if cfg.model.name_or_path:
        base = str(Path(cfg.model.name_or_path).expanduser().resolve())
    else:
        base = str(work / "base")
        model.save_pretrained(base)
    targets = select_targets(model, cfg.levels.target_modules)
    conv1d = any(type(model.get_submodule(t)).__name__ == "Conv1D" for t in targets)
    del model
    tokenizer = load_tokenizer(cfg.model)
    specs = agent_specs(wl)
    streams = {s.id: Workload(wl, s, tokenizer) for s in specs}
    tensors: dict[str, torch.Tensor] = {}
    for i, s in enumerate(specs):  # the batches of steps 1..steps, as Agent.step draws them
        tensors[f"train.{i}"] = torch.stack([streams[s.id].next_batch()[0].ids for _ in range(exp.steps)])
    held = Streams(specs, {a: w.held_out for a, w in streams.items()})
    sets: dict[tuple[str, ...], int] = {}
    agents = []
    for s in specs:
        groups = {}
        for key, members in scenarios.groups(held, s.id).items():
            if not members:
                continue
            if tuple(members) not in sets:
                k = sets[tuple(members)] = len(sets)
                w = scenarios.group_windows(held, members, wl.eval_windows)
                tensors[f"eval.{k}.ids"], tensors[f"eval.{k}.bytes"] = w.ids, w.target_bytes
            groups[key] = sets[tuple(members)]
        agents.append({"id": s.id, "groups": groups})
    save_file({k: v.to(torch.int32).contiguous() for k, v in tensors.items()}, str(work / "inputs.safetensors"))
    rank = int(cfg.levels.rank)
    spec = {"base": base, "dtype": cfg.model.dtype, "seed": seed, "agents": agents, "steps": exp.steps,
            "local_steps": int(cfg.dynamics.sync.max_interval),  # our fedavg arm pushes every max_interval steps
            "batch_size": wl.batch_size, "seq_len": wl.seq_len, "eval_every": exp.eval_every, "eval_batch": 16,
            "lr": cfg.agent.lr_agent, "betas": [cfg.agent.beta1, cfg.agent.beta2], "eps": cfg.agent.eps,
            "lora": {"r": rank, "lora_alpha": cfg.levels.scale * rank, "lora_dropout": 0.0, "bias": "none",
                     "target_modules": targets, "fan_in_fan_out": conv1d},
            "threads": 1, "tensors": "inputs.safetensors", "result": "result.json"}
    (work / "spec.json").write_text(json.dumps(spec, indent=2) + "\n")
    return spec


def run_flower(cfg, seed: int, work_dir: Path | None = None) -> dict[str, Any]:
    """Run the arm for job config ``cfg`` (seed ``seed``) in ``.venv-flower``; returns the job result's
    ``team`` and ``flower`` parts. ``work_dir``: where the exchange files go (default: a temporary
    directory, removed afterwards).

    Raises:
        RuntimeError: ``.venv-flower`` is missing, or the subprocess failed (the message holds its log's end).
    """
    python = flower_python()
    if work_dir is None:
        with tempfile.TemporaryDirectory(prefix="flower-") as tmp:
            return run_flower(cfg, seed, Path(tmp))
    work_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    write_inputs(cfg, seed, work_dir)
    out = launch(python, work_dir)
    out["flower"]["seconds_total"] = time.time() - t0
    return out


def launch(python: Path, work_dir: Path) -> dict[str, Any]:
    """Run ``flower_app`` on ``work_dir/spec.json`` with ``python`` and return its checked ``result.json``.

    Raises:
        RuntimeError: the subprocess failed or wrote no result (the message holds its log's end), or the
            result does not answer the spec (rounds, agents).
    """
    spec = json.loads((work_dir / "spec.json").read_text())
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}  # never join our Ray (2.60)
    env.update(PYTHONPATH=str(ROOT), FLWR_TELEMETRY_ENABLED="0", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               RAY_DEDUP_LOGS="0")
    log = work_dir / "flower.log"
    with log.open("w") as out:
        proc = subprocess.run([str(python), "-m", "swarm.experiment.flower_app", str(work_dir / "spec.json")],
                              cwd=work_dir, env=env, stdout=out, stderr=subprocess.STDOUT, check=False)
    result = work_dir / spec["result"]
    if proc.returncode != 0 or not result.is_file():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        raise RuntimeError(f"{ARM}: the Flower subprocess ({python}) exited {proc.returncode} without "
                           f"{result.name}; the end of its log ({log}):\n{tail}")
    out = json.loads(result.read_text())
    rounds = math.ceil(spec["steps"] / spec["local_steps"])
    if out["flower"]["rounds"] != rounds or set(out["team"]["agents"]) != {a["id"] for a in spec["agents"]}:
        raise RuntimeError(f"{ARM}: {result} does not answer its spec ({rounds} rounds, {len(spec['agents'])} agents)")
    return out
