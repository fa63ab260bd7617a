"""The stack on a GPU: one training step vs PEFT on CUDA, and a short swarm run with agents on the GPU.

    python bench/gpu.py            # sized for under 5 minutes on one GPU and 16 CPUs (not yet timed on one)
    python bench/gpu.py --quick    # smoke run: few steps

Without a CUDA device it stops at once with a message saying so (exit status 1) and writes nothing.

1. Stack step (the arms of ``bench/stack_step.py``, moved to the GPU): ``stack`` (LevelStack, five
   levels, total rank R), ``peft_single`` (one LoRA of rank R), ``peft_five`` (five LoRAs of rank
   R/5), ``base_floor`` (the frozen base with one rank-1 level on one module). Each arm on two
   bases, the tiny Llama of the CPU benchmark and a small Llama (hidden 1024, 8 layers), each in
   float32 and with the base in bfloat16 (adapters stay float32 in every arm: the stack by design,
   PEFT by ``autocast_adapter_dtype``). A step is forward + cross-entropy + backward + AdamW,
   timed between ``torch.cuda.synchronize()`` calls; arms are interleaved round by round and the
   median is reported, with the peak GPU memory one step allocates above what the arm holds.
2. Swarm: ``configs/swarm.yaml`` (4 stdlib agents in two teams, level servers on CPU) from a
   random base (``pretrain.enabled=false``), once with ``agent.device=cuda model.dtype=bfloat16``
   (each agent actor asks Ray for ``agent.gpus_per_agent`` = 0.25 GPU: all four share the GPU)
   and once on CPU in float32, same steps. Reported: agent steps per second, held-out bits per
   byte at the start and the end, merges, each agent's device, the GPUs Ray had left while
   the agents ran.

Writes bench/results/gpu.json ("ratios": stack/PEFT step-time ratios on the GPU, bf16/fp32
step time, GPU/CPU swarm throughput) and bench/results/gpu.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agents.config import ModelConfig  # noqa: E402

TARGETS = {"stack_over_peft_single": 1.10, "stack_over_peft_five": 0.5}  # as bench/stack_step.py, on the GPU
BASES = {"tiny": ModelConfig(), "small": ModelConfig(hidden_size=1024, num_layers=8, num_heads=16,
                                                     intermediate_size=2752)}


def require_cuda() -> torch.device:
    """The GPU, or exit with a message that says why not."""
    if not torch.cuda.is_available():
        raise SystemExit(f"bench/gpu.py needs a CUDA GPU, and torch sees none: torch.cuda.is_available() is False "
                         f"(torch {torch.__version__}, built for CUDA {torch.version.cuda}). Run it on a machine "
                         "with a GPU; the CPU figures come from bench/stack_step.py and bench/system.py.")
    return torch.device("cuda")


# ---------------------------------------------------------------------- 1. the stack step on the GPU
def arms(cfg: ModelConfig, rank: int, device: torch.device) -> dict:
    from bench.stack_step import make_base_floor, make_peft, make_stack

    built = {"stack": make_stack(cfg, rank), "peft_single": make_peft(cfg, rank, 1),
             "peft_five": make_peft(cfg, rank, 5), "base_floor": make_base_floor(cfg)}
    return {name: model.to(device) for name, model in built.items()}


def timed_step(model, opt, batch) -> float:
    """Seconds of one synchronised training step."""
    from bench.stack_step import step

    torch.cuda.synchronize()
    t0 = time.perf_counter()
    step(model, opt, batch)
    torch.cuda.synchronize()
    return time.perf_counter() - t0


def step_peak_bytes(model, opt, batch) -> int:
    """Peak GPU bytes one step allocates above what the arm holds before it."""
    from bench.stack_step import step

    torch.cuda.synchronize()
    held = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step(model, opt, batch)
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - held


def measure_step(models: dict, batch: torch.Tensor, warmup: int, rounds: int, per_round: int) -> dict:
    opts = {k: torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4) for k, m in models.items()}
    for name, model in models.items():
        model.train()
        for _ in range(warmup):
            timed_step(model, opts[name], batch)
    times: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(rounds):
        for name, model in models.items():
            for _ in range(per_round):
                times[name].append(timed_step(model, opts[name], batch))
    median = {k: statistics.median(v) for k, v in times.items()}
    trainable = {k: sorted({str(p.dtype) for p in m.parameters() if p.requires_grad}) for k, m in models.items()}
    return {"step_ms_median": {k: v * 1e3 for k, v in median.items()},
            "step_peak_mb": {k: step_peak_bytes(m, opts[k], batch) / 2**20 for k, m in models.items()},
            "trainable_dtypes": trainable,
            "ratios": {"stack_over_peft_single": median["stack"] / median["peft_single"],
                       "stack_over_peft_five": median["stack"] / median["peft_five"]}}


def stack_benchmark(device: torch.device, rank: int, shapes: dict[str, tuple[int, int]], quick: bool) -> dict:
    warmup, rounds, per_round = (2, 3, 2) if quick else (5, 10, 3)
    out = {}
    for base, cfg in BASES.items():
        b, t = shapes[base]
        for dtype in ("float32", "bfloat16"):
            key = f"{base}/{dtype}"
            print(f"stack step: {key}, batch {b}x{t} ...", flush=True)
            models = arms(dataclasses.replace(cfg, dtype=dtype), rank, device)
            batch = torch.randint(0, cfg.vocab_size, (b, t + 1), generator=torch.Generator().manual_seed(0))
            out[key] = {"batch": f"{b}x{t}", **measure_step(models, batch.to(device), warmup, rounds, per_round)}
            del models
            torch.cuda.empty_cache()
    return out


# ---------------------------------------------------------------------- 2. a short swarm on the GPU
def swarm_run(device: str, dtype: str, steps: int, tmp: Path) -> dict:
    import ray
    from rich.console import Console

    from swarm.config import load_config
    from swarm.run.driver import Run

    name = f"{device}-{dtype}"
    cfg = load_config("swarm", ["pretrain.enabled=false", f"agent.device={device}", f"model.dtype={dtype}",
                                f"run.steps={steps}", f"run.eval_every={steps}", f"run.checkpoint_every={steps}",
                                f"run.out_dir={tmp}", f"run.name={name}"])
    print(f"swarm: 4 agents, agent.device={device}, model.dtype={dtype}, {steps} steps each ...", flush=True)
    with Run.open(cfg, tmp / name, Console(file=io.StringIO())) as run:
        gpus_left = ray.available_resources().get("GPU", 0.0)  # while the agent actors hold their shares
        start = time.perf_counter()
        run.drive(None)
        wall = time.perf_counter() - start
        run.poll()
    recs = list(run.snap["agents"].values())
    total = sum(r["step"] - run.snap["start_steps"][r["agent"]] for r in recs)
    return {"agent_device": device, "model_dtype": dtype, "agents": len(recs), "steps_per_agent": steps,
            "wall_s": wall, "agent_steps_per_s": total / wall,
            "eval_start_bpb": statistics.mean(r["eval_start"] for r in recs),
            "eval_end_bpb": statistics.mean(r["eval_bpb"] for r in recs),
            "merges": sum(s["stats"]["merges"] for s in run.snap["servers"].values()),
            "pushes": sum(r["pushes"] for r in recs), "devices": sorted({r.get("device", "?") for r in recs}),
            "gpus_per_agent": cfg.agent.gpus_per_agent, "cluster_gpus": ray.cluster_resources().get("GPU", 0.0),
            "gpus_left_while_running": gpus_left}


def swarm_benchmark(steps: int) -> dict:
    import ray

    from swarm.ray_session import start_ray

    started = start_ray("swarm-bench-gpu")
    try:
        with TemporaryDirectory() as tmp:
            return {"cuda": swarm_run("cuda", "bfloat16", steps, Path(tmp)),
                    "cpu": swarm_run("cpu", "float32", steps, Path(tmp))}
    finally:
        if started:
            ray.shutdown()


# ---------------------------------------------------------------------- report
def markdown(result: dict) -> str:
    s = result["setup"]
    lines = [f"# gpu: the stack on {s['gpu']} (torch {s['torch']}, CUDA {s['cuda']}, R={s['rank']})", "",
             "## One training step (forward + backward + AdamW), median of synchronised steps", "",
             "| base / base dtype | batch | arm | median step (ms) | vs stack | peak step memory (MB) "
             "| trainable dtypes |", "|---|---|---|---:|---:|---:|---|"]
    for key, r in result["stack_step"].items():
        med = r["step_ms_median"]
        for arm, ms in med.items():
            lines.append(f"| {key} | {r['batch']} | {arm} | {ms:.2f} | {ms / med['stack']:.2f}x | "
                         f"{r['step_peak_mb'][arm]:.1f} | {', '.join(r['trainable_dtypes'][arm]) or '-'} |")
    lines += ["", "## Short swarm (configs/swarm.yaml, random base, 4 agents)", "",
              "| agents on | base dtype | steps/agent | agent steps/s | held-out bpb start -> end | merges | "
              "devices | GPUs left while running |", "|---|---|---:|---:|---|---:|---|---:|"]
    for r in result["swarm"].values():
        lines.append(f"| {r['agent_device']} | {r['model_dtype']} | {r['steps_per_agent']} | "
                     f"{r['agent_steps_per_s']:.2f} | {r['eval_start_bpb']:.3f} -> {r['eval_end_bpb']:.3f} | "
                     f"{r['merges']} | {', '.join(r['devices'])} | {r['gpus_left_while_running']:g} "
                     f"of {r['cluster_gpus']:g} |")
    lines += ["", "## ratios", "", "| ratio | measured | target |", "|---|---:|---|"]
    for k, v in result["ratios"].items():
        target = result["targets"].get(k)
        lines.append(f"| {k} | {v:.3f} | {f'<= {target}' if target else '-'} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few steps (smoke run)")
    parser.add_argument("--rank", type=int, default=40)
    parser.add_argument("--swarm-steps", type=int, default=None, help="steps per agent (default 60, quick 10)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    device = require_cuda()
    began = time.perf_counter()
    torch.manual_seed(0)
    shapes = {"tiny": (8, 128), "small": (8, 256)}
    stack = stack_benchmark(device, args.rank, shapes, args.quick)
    swarm = swarm_benchmark(args.swarm_steps or (10 if args.quick else 60))
    tiny, small = stack["tiny/float32"]["ratios"], stack["small/bfloat16"]["ratios"]
    ratios = {
        "stack_over_peft_single": tiny["stack_over_peft_single"],  # the CPU benchmark's headline, on the GPU
        "stack_over_peft_five": tiny["stack_over_peft_five"],
        "stack_over_peft_single_small_bf16": small["stack_over_peft_single"],
        "stack_over_peft_five_small_bf16": small["stack_over_peft_five"],
        "bf16_over_fp32_stack_step_small": (stack["small/bfloat16"]["step_ms_median"]["stack"]
                                            / stack["small/float32"]["step_ms_median"]["stack"]),
        "swarm_steps_per_s_gpu_over_cpu": swarm["cuda"]["agent_steps_per_s"] / swarm["cpu"]["agent_steps_per_s"],
    }
    result = {
        "setup": {"gpu": torch.cuda.get_device_name(device), "torch": torch.__version__, "cuda": torch.version.cuda,
                  "cpus": os.cpu_count(), "machine": platform.processor() or platform.machine(), "rank": args.rank,
                  "bases": {k: dataclasses.asdict(v) for k, v in BASES.items()}, "shapes": shapes,
                  "quick": args.quick},
        "ratios": ratios,
        "targets": TARGETS,
        "met": {k: ratios[k] <= v for k, v in TARGETS.items()},
        "stack_step": stack,
        "swarm": swarm,
        "wall_s": time.perf_counter() - began,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu.json").write_text(json.dumps(result, indent=2) + "\n")
    text = markdown(result)
    (args.out / "gpu.md").write_text(text)
    print(text)
    return result


if __name__ == "__main__":
    main()
