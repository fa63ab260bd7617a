"""One training step: the five-level stack vs PEFT, side by side in one run.

    python bench/stack_step.py            # full run (about a minute on 2 cores)
    python bench/stack_step.py --quick    # smoke run

Arms, on the same tiny Llama, batch and target modules, all with AdamW:
  stack       LevelStack, total rank R, five levels, all trainable and enabled
  peft_single one PEFT LoRA adapter of rank R
  peft_five   five PEFT LoRA adapters of rank R/5, all active and trainable
A step is forward + cross-entropy + backward + optimizer step. Arms are interleaved
round by round so machine noise hits them alike; the median step time is reported.
Memory, counted exactly rather than sampled (a CPU has no allocator peak counter, and
RSS hides a step's allocations behind the allocator's cache): bytes saved for backward
during the forward (unique storages), and trainable state (parameters + gradients +
AdamW moments). Their sum bounds what an arm holds at its peak beyond the frozen model
and the transient buffers of single ops, which all arms share.
Writes bench/results/stack_step.json (with "ratios" and "targets") and .md.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agents.config import ModelConfig  # noqa: E402
from agents.model import build_model  # noqa: E402
from layers import LevelsConfig, LevelStack  # noqa: E402

TARGETS = {"stack_over_peft_single": 1.10, "stack_over_peft_five": 0.5}
SUFFIXES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def make_stack(cfg: ModelConfig, rank: int):
    model = build_model(cfg)
    stack = LevelStack.attach(model, LevelsConfig(rank=rank))
    stack.set_trainable(stack.levels)
    stack.set_enabled(stack.levels)
    return model


def make_peft(cfg: ModelConfig, rank: int, adapters: int):
    from peft import LoraConfig, get_peft_model

    r = rank // adapters
    lora = dict(r=r, lora_alpha=r, lora_dropout=0.0, target_modules=SUFFIXES)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = get_peft_model(build_model(cfg), LoraConfig(**lora), adapter_name="l0")
        for i in range(1, adapters):
            model.add_adapter(f"l{i}", LoraConfig(**lora))
        model.base_model.set_adapter([f"l{i}" for i in range(adapters)])
    with torch.no_grad():  # non-zero B so every path carries signal
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 1e-3)
    return model


def step(model, opt, batch) -> None:
    logits = model(batch[:, :-1]).logits  # (B, T, V)
    F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten()).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def memory(model, opt, batch) -> dict:
    """Exact bytes: saved-for-backward activations, and trainable state (params + grads + AdamW)."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logits = model(batch[:, :-1]).logits
        loss = F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())
    loss.backward()
    opt.step()
    trainable = [p for p in model.parameters() if p.requires_grad]
    state = sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values() if torch.is_tensor(t))
    params = sum(p.numel() * p.element_size() for p in trainable)
    opt.zero_grad(set_to_none=True)
    saved = sum(storages.values())
    return {"saved_activation_bytes": saved, "trainable_params": sum(p.numel() for p in trainable),
            "trainable_state_bytes": 2 * params + state, "peak_training_bytes": saved + 2 * params + state}


def make_base_floor(cfg: ModelConfig):
    """The frozen base with one rank-1 level on one module: what every arm pays before its adapters."""
    model = build_model(cfg)
    LevelStack.attach(model, LevelsConfig(names=["only"], rank=1, target_modules=["model.layers.0.self_attn.q_proj"]))
    return model


def measure(arms: dict, batch: torch.Tensor, warmup: int, rounds: int, per_round: int) -> dict:
    opts = {k: torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4) for k, m in arms.items()}
    for name, model in arms.items():
        model.train()
        for _ in range(warmup):
            step(model, opts[name], batch)
    times: dict[str, list[float]] = {k: [] for k in arms}
    for _ in range(rounds):
        for name, model in arms.items():
            for _ in range(per_round):
                t0 = time.perf_counter()
                step(model, opts[name], batch)
                times[name].append(time.perf_counter() - t0)
    median = {k: statistics.median(v) for k, v in times.items()}
    quartiles = {k: statistics.quantiles(v, n=4) for k, v in times.items()}  # [p25, p50, p75]
    floor = median["base_floor"]
    return {
        "step_seconds_median": median,
        "step_seconds_p25_p75": {k: [q[0], q[2]] for k, q in quartiles.items()},
        "step_seconds_all": times,
        "memory": {k: memory(m, opts[k], batch) for k, m in arms.items() if k != "base_floor"},
        "ratios": {"stack_over_peft_single": median["stack"] / median["peft_single"],
                   "stack_over_peft_five": median["stack"] / median["peft_five"]},
        # What the adapters add on top of the frozen base: the part the stack's design controls.
        "adapter_overhead_ratios": {
            "stack_over_peft_single": (median["stack"] - floor) / (median["peft_single"] - floor),
            "stack_over_peft_five": (median["stack"] - floor) / (median["peft_five"] - floor),
        },
    }


def markdown(result: dict) -> str:
    s = result["setup"]
    lines = [f"# stack_step: one training step (forward + backward + AdamW), R={s['rank']}, tiny Llama "
             f"({s['params'] / 1e6:.1f} M frozen params), {s['threads']} threads, torch {s['torch']}", ""]
    for shape, r in result["by_shape"].items():
        med, mem = r["step_seconds_median"], r["memory"]
        lines += [f"## batch {shape}", "",
                  "| arm | median step (ms) | p25-p75 (ms) | vs stack | trainable params | trainable state (MB) "
                  "| saved activations (MB) | peak training memory (MB) |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for name, t in med.items():
            m = mem.get(name)
            extra = (f"{m['trainable_params']:,} | {m['trainable_state_bytes'] / 2**20:.1f} | "
                     f"{m['saved_activation_bytes'] / 2**20:.1f} | {m['peak_training_bytes'] / 2**20:.1f}") if m \
                else "- | - | - | -"
            lo, hi = r["step_seconds_p25_p75"][name]
            spread = f"{lo * 1e3:.0f}-{hi * 1e3:.0f}"
            lines.append(f"| {name} | {t * 1e3:.1f} | {spread} | {t / med['stack']:.2f}x | {extra} |")
        o = r["adapter_overhead_ratios"]
        lines += ["", f"adapter overhead above base_floor: stack/peft_single {o['stack_over_peft_single']:.2f}, "
                  f"stack/peft_five {o['stack_over_peft_five']:.2f}", ""]
    lines += [f"## ratios (batch {s['headline_shape']})", "",
              "| ratio | measured | target | met |", "|---|---:|---:|---|"]
    for k, v in result["ratios"].items():
        t = result["targets"][k]
        lines.append(f"| {k} | {v:.3f} | <= {t['max']} | {'yes' if t['met'] else 'NO'} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one shape, few steps (smoke run)")
    parser.add_argument("--rank", type=int, default=40)
    parser.add_argument("--shapes", default="8x128,2x64,16x256", help="batch x seq_len list; the first is the headline")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    if args.quick:
        shapes, (warmup, rounds, per_round) = shapes[:1], (2, 3, 2)
    else:
        warmup, rounds, per_round = 4, 10, 3
    torch.manual_seed(0)
    cfg = ModelConfig()
    arms = {"stack": make_stack(cfg, args.rank), "peft_single": make_peft(cfg, args.rank, 1),
            "peft_five": make_peft(cfg, args.rank, 5), "base_floor": make_base_floor(cfg)}
    by_shape = {}
    for b, t in shapes:
        print(f"batch {b}x{t}: timing {list(arms)} interleaved, {rounds * per_round} steps each ...", flush=True)
        by_shape[f"{b}x{t}"] = measure(arms, torch.randint(0, 256, (b, t + 1)), warmup, rounds, per_round)
    headline = next(iter(by_shape))
    ratios = by_shape[headline]["ratios"]
    result = {
        "setup": {"model": "tiny llama (configs/model/tiny_llama.yaml)",
                  "params": sum(p.numel() for p in arms["stack"].parameters() if not p.requires_grad),
                  "rank": args.rank, "threads": torch.get_num_threads(), "torch": torch.__version__,
                  "machine": platform.processor() or platform.machine(), "steps_per_arm": rounds * per_round,
                  "headline_shape": headline, "quick": args.quick},
        "ratios": ratios,
        "targets": {k: {"max": v, "met": ratios[k] <= v} for k, v in TARGETS.items()},
        "by_shape": by_shape,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "stack_step.json").write_text(json.dumps(result, indent=2) + "\n")
    text = markdown(result)
    (args.out / "stack_step.md").write_text(text)
    print(text)
    return result


if __name__ == "__main__":
    main()
