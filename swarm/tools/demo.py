"""``swarm demo``: one process, the level stack learning a real text stream.

The base model is frozen. The fastest level (context) learns quickly and is reset at
every file boundary; the next level (agent) learns the same gradient more slowly
and keeps what recurs across files. Held-out bits per byte are measured with the
agent level alone, so the number shows knowledge that outlived the contexts. At the
end the agent level is exported as a PEFT adapter and reloaded by PEFT (logits must
match), and the rank is grown (logits must not move).
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from agents.model import build_model
from agents.sources import stdlib_documents
from agents.text import Windows, eval_windows, load_tokenizer, sample_windows
from layers import LevelStack
from swarm.config import SwarmConfig


def _bpb_with(stack: LevelStack, levels: list[str], windows: Windows) -> float:
    with stack.using(levels):
        return windows.bits_per_byte(stack.model)


def _peft_check(cfg: SwarmConfig, stack: LevelStack, level: str, out: Path, probe: torch.Tensor) -> float:
    """Export ``level``, load it with PEFT on a fresh base, return max |logit difference|."""
    from peft import PeftModel

    directory = stack.export_peft(level, out / f"adapter_{level}", base_model_name_or_path=cfg.model.name_or_path)
    with stack.using([level]), torch.no_grad():
        ours = stack.model(probe).logits
        with warnings.catch_warnings():  # PEFT calls a transformers API deprecated in v5
            warnings.simplefilter("ignore", FutureWarning)
            peft_model = PeftModel.from_pretrained(build_model(cfg.model), str(directory)).eval()
        theirs = peft_model(probe).logits
    return float((ours - theirs).abs().max())


def run_demo(cfg: SwarmConfig, *, progress: bool = True) -> dict:
    """Run the demo of ``cfg.demo``; returns (and writes to ``out_dir/metrics.json``) its metrics."""
    d = cfg.demo
    console = Console()
    if len(cfg.levels.names) < 2:
        raise ValueError("the demo trains the two fastest levels: levels.names needs at least two")
    fast, slow = cfg.levels.names[0], cfg.levels.names[1]
    out = Path(d.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    console.print(f"[bold]swarm demo[/]: building the base model ({cfg.model.arch}) and attaching the level stack")
    model = build_model(cfg.model)
    stack = LevelStack.attach(model, cfg.levels)
    tokenizer = load_tokenizer(cfg.model)
    corpus = stdlib_documents(d.packages)
    held = eval_windows([tokenizer.encode_with_bytes(doc.text) for doc in corpus.held_out], d.seq_len,
                        d.eval_windows)
    console.print(
        f"  base {sum(p.numel() for p in model.parameters() if not p.requires_grad) / 1e6:.2f} M params (frozen); "
        f"{len(stack.modules)} modules adapted, rank {stack.rank}, levels {list(stack.levels)} "
        f"({stack.num_parameters(fast) / 1e3:.0f} k params each)"
    )
    console.print(f"  stream: {len(corpus.train)} train files, {len(corpus.held_out)} held-out files "
                  f"of stdlib packages {list(d.packages)}")

    base_bpb = _bpb_with(stack, [], held)
    stack.set_trainable([fast, slow])
    stack.set_enabled(stack.levels)
    fast_params, slow_params = list(stack.parameters([fast])), list(stack.parameters([slow]))
    opt = torch.optim.AdamW([{"params": fast_params, "lr": d.lr_context}, {"params": slow_params, "lr": d.lr_agent}],
                            weight_decay=0.0)
    gen = torch.Generator().manual_seed(d.seed)
    history: list[dict] = [{"step": 0, "held_out_bpb_agent": base_bpb}]
    console.print(f"  held-out bits/byte of the frozen base: {base_bpb:.3f}")

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
               TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=console, disable=not progress) as bar:
        task = bar.add_task("training", total=d.steps, info="")
        for step in range(d.steps):
            if step % d.steps_per_context == 0:
                doc = corpus.train[(step // d.steps_per_context) % len(corpus.train)]
                data = tokenizer.encode_with_bytes(doc.text)
                if step:  # context boundary: the fast level starts over
                    stack.reset_level(fast)
                    for p in fast_params:
                        opt.state.pop(p, None)
            batch = sample_windows(data, d.batch_size, d.seq_len, gen)  # ids (B, T+1)
            logits = model(batch.inputs).logits  # (B, T, V)
            loss = F.cross_entropy(logits.flatten(0, 1), batch.targets.flatten())
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            bpb = batch.loss_bits_per_byte(loss)
            bar.update(task, advance=1, info=f"train {bpb:.3f} bpb  file {Path(doc.source).name}")
            if (step + 1) % d.eval_every == 0 or step + 1 == d.steps:
                value = _bpb_with(stack, [slow], held)
                history.append({"step": step + 1, "held_out_bpb_agent": value, "train_bpb": bpb})
                bar.console.print(f"  step {step + 1:4d}: train {bpb:.3f} bpb, held-out ({slow} level) {value:.3f} bpb")

    final = {
        "base": base_bpb,
        slow: _bpb_with(stack, [slow], held),
        f"{fast}+{slow}": _bpb_with(stack, [fast, slow], held),
    }
    probe = held.inputs[:4]
    peft_diff = _peft_check(cfg, stack, slow, out, probe)
    growth_diff = None
    if d.grow_by:
        with torch.no_grad():
            before = model(probe).logits
            stack.grow(stack.rank + d.grow_by)
            growth_diff = float((model(probe).logits - before).abs().max())
    metrics = {
        "held_out_bpb": final,
        "history": history,
        "peft_roundtrip_max_abs_logit_diff": peft_diff,
        "growth_max_abs_logit_diff": growth_diff,
        "rank": stack.rank,
        "seconds": time.perf_counter() - started,
        "config": {"steps": d.steps, "packages": list(d.packages), "arch": cfg.model.arch},
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")

    table = Table(title="held-out bits/byte")
    table.add_column("levels enabled")
    table.add_column("bits/byte", justify="right")
    for name, value in final.items():
        table.add_row(name, f"{value:.3f}")
    console.print(table)
    console.print(f"  PEFT round trip of the {slow} level: max |logit diff| = {peft_diff:.2e}")
    if growth_diff is not None:
        console.print(f"  grew rank to {stack.rank}: max |logit diff| = {growth_diff:.2e}")
    console.print(f"  wrote {out / 'metrics.json'} and {out / f'adapter_{slow}'}/ in {metrics['seconds']:.0f} s")
    return metrics
