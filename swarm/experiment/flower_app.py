"""The Flower side of the ``flower_fedavg`` arm: runs in ``.venv-flower``, never in ``.venv``.

``python -m swarm.experiment.flower_app SPEC.json`` (launched by :mod:`swarm.experiment.flower_arm`, with
this checkout on ``PYTHONPATH``) runs flat FedAvg of a PEFT LoRA through Flower's own simulation engine:
``flwr.simulation.run_simulation`` with a ``ServerApp`` whose main runs Flower's ``FedAvg`` strategy and a
``ClientApp`` with one virtual SuperNode per agent. It imports only flwr, torch, transformers, peft,
safetensors and :mod:`layers.eval` (pure torch), so it needs none of ``.venv``'s pins (ray 2.60, ...).

Inputs (written by our side next to SPEC.json): the frozen HF base (``spec["base"]``), every agent's
training windows for every step (``train.<i>``: (steps, B, T+1) token ids, the exact batches its
``agents.workload.Workload`` stream gives our arms) and the held-out window sets of the evaluation
groups (``eval.<k>.ids`` (N, T+1), ``eval.<k>.bytes`` (N, T) bytes per target token).

What runs:

- round r = 1 .. ceil(steps / local_steps): the server sends the global LoRA to every client; client i
  loads it, takes ``local_steps`` Adam steps (a fresh optimizer each round, as Flower's PyTorch
  examples do) on its batches ``(r-1)*local_steps .. r*local_steps - 1`` and replies with its LoRA
  weights and ``num-examples``; FedAvg replaces the global LoRA by their example-weighted mean;
- centralised evaluation (the strategy's ``evaluate_fn``): the global model on every agent's own
  held-out windows at step 0, every ``eval_every`` steps and at the end (the learning curve);
- after the last round, one evaluate message per client: it scores the final global LoRA and the base
  alone on its groups (own, team, domain, others, other_domains) in bits per byte per byte of text
  (:func:`layers.eval.model_bits_per_byte`).

Output: ``spec["result"]`` (JSON), the ``team`` part of a team job's result (``agents``, ``curve``,
``bytes_per_step``; no level timescales, promotions or screening: a PEFT LoRA has none) plus ``flower``
(versions, rounds, clients, LoRA size, last round's training loss).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from layers.eval import model_bits_per_byte

SPEC_ENV = "SWARM_FLOWER_SPEC"  # the spec's path, for the Ray actors that run the ClientApp
_STATE: dict[str, Any] = {}  # per process (driver or actor): spec, model, windows, memo; loaded once


def _state() -> dict[str, Any]:
    """The spec, a PEFT LoRA on the frozen base, and the windows, loaded once per process."""
    path = os.environ[SPEC_ENV]
    if _STATE.get("path") != path:
        from safetensors.torch import load_file

        spec = json.loads(Path(path).read_text())
        torch.set_num_threads(int(spec["threads"]))
        tensors = load_file(str(Path(path).parent / spec["tensors"]))
        _STATE.clear()
        _STATE.update(path=path, spec=spec, model=_lora_model(spec), tensors=tensors, memo={})
    return _STATE


def _lora_model(spec: dict[str, Any]):
    """The base (eval mode: no dropout, as our agents run it) under a fresh PEFT LoRA; A is drawn from
    torch's RNG seeded with the job's seed, so the driver and every actor build the same initial LoRA."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.manual_seed(int(spec["seed"]))
    dtype = getattr(torch, spec["dtype"])
    base = AutoModelForCausalLM.from_pretrained(spec["base"], local_files_only=True, dtype=dtype)
    model = get_peft_model(base, LoraConfig(**spec["lora"]))
    return model.eval()


def _lora_state(model) -> dict[str, torch.Tensor]:
    """The LoRA weights (A and B of every adapted module), detached copies."""
    from peft import get_peft_model_state_dict

    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}


def _load(model, arrays: ArrayRecord) -> None:
    from peft import set_peft_model_state_dict

    result = set_peft_model_state_dict(model, arrays.to_torch_state_dict())
    unexpected = [k for k in result.unexpected_keys if "lora_" in k]
    if unexpected:
        raise ValueError(f"flower_app: the global LoRA has keys this model lacks: {unexpected[:3]}")


def _windows(st: dict[str, Any], k: int) -> tuple[torch.Tensor, torch.Tensor]:
    t = st["tensors"]
    return t[f"eval.{k}.ids"].long(), t[f"eval.{k}.bytes"].long()


def _bpb(st: dict[str, Any], k: int, *, base: bool = False) -> float:
    """Bits per byte of the current model (or the base alone) on window set ``k``."""
    ids, nbytes = _windows(st, k)
    model, batch = st["model"], int(st["spec"]["eval_batch"])
    if base:
        with model.disable_adapter():
            return model_bits_per_byte(model, ids, batch_size=batch, window_bytes=nbytes)
    return model_bits_per_byte(model, ids, batch_size=batch, window_bytes=nbytes)


# ---------------------------------------------------------------------------------------------- ClientApp
client = ClientApp()


@client.train()
def train(msg: Message, context: Context) -> Message:
    """Local steps of agent ``partition-id`` on its batches of this round, from the global LoRA."""
    st = _state()
    spec, model = st["spec"], st["model"]
    i = int(context.node_config["partition-id"])
    rnd = int(msg.content["config"]["server-round"])
    k, steps = int(spec["local_steps"]), int(spec["steps"])
    _load(model, msg.content["arrays"])
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=float(spec["lr"]), betas=tuple(spec["betas"]), eps=float(spec["eps"]))
    batches = st["tensors"][f"train.{i}"][(rnd - 1) * k:min(rnd * k, steps)].long()  # (k, B, T+1)
    losses = []
    for ids in batches:
        logits = model(input_ids=ids[:, :-1]).logits  # (B, T, V)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), ids[:, 1:].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    metrics = MetricRecord({"num-examples": int(batches.shape[0] * batches.shape[1]),
                            "train-loss": sum(losses) / max(1, len(losses))})
    return Message(content=RecordDict({"arrays": ArrayRecord(_lora_state(model)), "metrics": metrics}), reply_to=msg)


@client.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """The final global LoRA and the base alone on every group of agent ``partition-id``."""
    st = _state()
    i = int(context.node_config["partition-id"])
    agent = st["spec"]["agents"][i]
    _load(st["model"], msg.content["arrays"])
    rnd = int(msg.content["config"]["server-round"])  # every client gets the same global LoRA of this round
    rec: dict[str, float | int] = {"agent-index": i, "num-examples": 1}
    for group, k in agent["groups"].items():
        for key, base in ((group, False), (group + "_base", True)):
            memo = ("base" if base else rnd, k)  # a window set shared by several clients is scored once
            if memo not in st["memo"]:
                st["memo"][memo] = _bpb(st, k, base=base)
            rec[key] = st["memo"][memo]
    return Message(content=RecordDict({"metrics": MetricRecord(rec)}), reply_to=msg)


# ---------------------------------------------------------------------------------------------- ServerApp
server = ServerApp()


@server.main()
def main(grid: Grid, context: Context) -> None:
    """FedAvg for every round, then the clients' final evaluation; writes the result JSON."""
    t0 = time.time()
    st = _state()
    spec, model = st["spec"], st["model"]
    n, k, steps = len(spec["agents"]), int(spec["local_steps"]), int(spec["steps"])
    rounds = math.ceil(steps / k)
    initial = _lora_state(model)
    curve: list[list[float]] = []

    def central(rnd: int, arrays: ArrayRecord) -> MetricRecord | None:
        t = min(rnd * k, steps)
        if rnd and t // spec["eval_every"] == (t - k) // spec["eval_every"] and rnd != rounds:
            return None
        _load(model, arrays)
        own = sum(_bpb(st, a["groups"]["own"]) for a in spec["agents"]) / n
        curve.append([t, own])
        return MetricRecord({"own": own})

    strategy = FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=n, min_available_nodes=n)
    t1 = time.time()
    result = strategy.start(grid=grid, initial_arrays=ArrayRecord(initial), num_rounds=rounds,
                            train_config=ConfigRecord({}), evaluate_fn=central)
    t2 = time.time()
    nodes = sorted(grid.get_node_ids())
    msgs = [Message(content=RecordDict({"arrays": result.arrays, "config": ConfigRecord({"server-round": rounds})}),
                    message_type=MessageType.EVALUATE, dst_node_id=node) for node in nodes]
    agents: dict[str, dict[str, float]] = {}
    for reply in grid.send_and_receive(msgs, timeout=3600):
        if reply.has_error():
            raise RuntimeError(f"flower_app: a client's final evaluation failed: {reply.error}")
        rec = dict(reply.content["metrics"])
        agent = spec["agents"][int(rec.pop("agent-index"))]
        rec.pop("num-examples")
        agents[agent["id"]] = {g: float(v) for g, v in rec.items()}
    if len(agents) != n:
        raise RuntimeError(f"flower_app: {len(agents)} of {n} clients answered the final evaluation")
    lora_bytes = sum(v.numel() * v.element_size() for v in initial.values())
    last = result.train_metrics_clientapp.get(rounds)
    out = {"team": {"curve": curve, "agents": {a["id"]: agents[a["id"]] for a in spec["agents"]},
                    "bytes_per_step": lora_bytes / k, "timescales": {}, "screened": {}, "promotions": {},
                    "servers": {}, "specialisation": {}},
           "flower": {"flwr": _version("flwr"), "ray": _version("ray"), "peft": _version("peft"),
                      "torch": torch.__version__, "rounds": rounds, "local_steps": k, "clients": n,
                      "lora_parameters": sum(v.numel() for v in initial.values()),
                      "last_train_loss": float(last["train-loss"]) if last is not None else None,
                      "seconds_setup": t1 - t0, "seconds_rounds": t2 - t1, "seconds_final_eval": time.time() - t2}}
    target = Path(os.environ[SPEC_ENV]).parent / spec["result"]
    target.write_text(json.dumps(out) + "\n")


def _version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


def start_ray(init_args: dict[str, Any], tries: int = 3, patience_s: float = 300.0) -> None:
    """Start this run's own Ray before Flower does (its backend then uses it). Ray gives a raylet a fixed
    30 s to register with its GCS, which a loaded machine misses (seen here at a load of 25 on 2 cores):
    its node lookup is made to keep asking for up to ``patience_s``, and a failed start is retried."""
    import ray
    import ray._private.services as services

    lookup = services.get_node

    def patient_lookup(*args, **kwargs):
        deadline = time.monotonic() + patience_s
        while True:
            try:
                return lookup(*args, **kwargs)
            except RuntimeError:  # not registered yet
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    services.get_node = patient_lookup
    # the raylet also waits for its agents (metrics port file) and aborts after this; default 30 s
    os.environ.setdefault("RAY_agent_register_timeout_ms", str(int(patience_s * 1000)))
    for attempt in range(1, tries + 1):
        try:
            ray.init(**init_args)
            return
        except Exception as ex:  # ray raises a bare Exception on a start-up timeout
            ray.shutdown()
            if attempt == tries:
                raise
            print(f"[flower_app] Ray did not start ({ex}); try {attempt + 1} of {tries}", flush=True)


def run(spec_path: str) -> None:
    """Run the simulation of ``spec_path`` (one Ray, ``threads`` CPUs, its own temp dir; one actor)."""
    import ray
    from flwr.simulation import run_simulation

    os.environ[SPEC_ENV] = str(Path(spec_path).resolve())  # inherited by Ray's workers
    spec = json.loads(Path(spec_path).read_text())
    cpus = int(spec["threads"])
    # Ray's own temp dir, short (its socket paths must stay under 107 bytes), removed afterwards
    ray_temp = tempfile.mkdtemp(prefix="flwr-", dir="/tmp")
    init_args = {"address": "local", "num_cpus": cpus, "num_gpus": 0, "_temp_dir": ray_temp,
                 "object_store_memory": 256 * 1024 * 1024, "logging_level": "ERROR", "include_dashboard": False}
    try:
        start_ray(init_args)
        backend = {"client_resources": {"num_cpus": cpus, "num_gpus": 0.0}, "init_args": init_args}
        run_simulation(server_app=server, client_app=client, num_supernodes=len(spec["agents"]),
                       backend_config=backend)
        ray.shutdown()  # stop this run's Ray before the process ends
    finally:
        shutil.rmtree(ray_temp, ignore_errors=True)


def _main(argv: list[str]) -> None:
    if len(argv) != 2:
        sys.exit("usage: python -m swarm.experiment.flower_app SPEC.json")
    try:
        run(argv[1])
    except BaseException:  # a failed simulation leaves Flower's ServerApp thread waiting for nodes: exit hard
        import traceback

        traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)


if __name__ == "__main__":
    _main(sys.argv)
