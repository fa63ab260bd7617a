"""``swarm pretrain-base``: pre-train the tiny byte-level base model once, cache it by content.

Adapting a random network says little about adapters, so experiments start from a base
pre-trained on standard-library packages set aside for it: disjoint from every agent of
the configured topology (an overlap is refused by name). The result is cached under
``<cache_dir>/<key>/``, where the key is a SHA-256 of the model config, the pretraining
config and the bytes of every corpus file, so the same inputs always reuse the same base
and any change trains a new one. The directory is a regular HF checkpoint (safetensors)
plus ``swarm_base.json``; use it with ``model.name_or_path=<dir>``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from agents.corpus import ByteCorpus, eval_windows, read_bytes, sample_windows
from agents.model import build_model
from agents.topology import agent_specs
from layers.eval import loss_bits_per_byte, model_bits_per_byte

MANIFEST = "swarm_base.json"


def packages_overlap(a: str, b: str) -> bool:
    """True when one dotted package name is the other or inside it (``email`` and ``email.mime``)."""
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def check_disjoint(cfg) -> None:
    """Refuse a pretraining corpus that shares a package with any stdlib agent of the topology."""
    if cfg.workload.kind != "stdlib":
        return
    agents = [s.name for s in agent_specs(cfg.workload)]
    clash = [(p, a) for p in cfg.pretrain.packages for a in agents if packages_overlap(p, a)]
    if clash:
        raise ValueError(f"pretrain.packages: {clash[0][0]!r} overlaps the agent {clash[0][1]!r}; the base must "
                         "not have seen any agent's files")


def base_key(cfg, corpus: ByteCorpus) -> str:
    """SHA-256 of the model config, the pretraining config and every corpus file's bytes."""
    model = dataclasses.asdict(cfg.model) | {"name_or_path": None}
    pre = dataclasses.asdict(cfg.pretrain) | {"cache_dir": None}
    h = hashlib.sha256(json.dumps({"model": model, "pretrain": pre}, sort_keys=True).encode())
    for path in [*corpus.train, *corpus.held_out]:
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def pretrain_base(cfg, *, progress: bool = True, echo=print) -> Path:
    """The cached base for ``cfg`` (trained now if missing); returns its directory."""
    check_disjoint(cfg)
    if cfg.model.name_or_path:
        raise ValueError("model.name_or_path: pretrain-base builds the tiny model from config; unset it")
    pre = cfg.pretrain
    corpus = ByteCorpus.from_packages(pre.packages)
    key = base_key(cfg, corpus)
    final = Path(pre.cache_dir) / key
    if (final / MANIFEST).is_file():
        echo(f"base {key}: cached at {final}")
        return final
    model = build_model(cfg.model).train()
    held = eval_windows(corpus.held_out, pre.seq_len, pre.eval_windows)
    data = torch.cat([read_bytes(p) for p in corpus.train])  # one stream; windows never see held-out files
    gen = torch.Generator().manual_seed(pre.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=pre.lr, weight_decay=pre.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, pre.warmup)) * 0.5 * (
        1 + math.cos(math.pi * min(1.0, s / pre.steps))))
    start_bpb, t0 = model_bits_per_byte(model.eval(), held), time.time()
    model.train()
    columns = [TextColumn("pretrain"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[loss]}"),
               TimeRemainingColumn()]
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task("steps", total=pre.steps, loss="")
        for _ in range(pre.steps):
            w = sample_windows(data, pre.batch_size, pre.seq_len, gen)  # (B, T+1)
            logits = model(w[:, :-1]).logits
            loss = F.cross_entropy(logits.flatten(0, 1), w[:, 1:].flatten())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            bar.update(task, advance=1, loss=f"{loss_bits_per_byte(loss, w[:, 1:]):.3f} bits/byte")
    model.eval()
    end_bpb = model_bits_per_byte(model, held)
    tmp = final.with_name(f".tmp-{key}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    manifest = {"key": key, "model": dataclasses.asdict(cfg.model), "pretrain": dataclasses.asdict(pre),
                "train_files": len(corpus.train), "held_out_files": len(corpus.held_out),
                "train_bytes": int(data.numel()), "bpb_start": start_bpb, "bpb_end": end_bpb,
                "seconds": time.time() - t0, "byte_level": True}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():  # a half-written leftover (no manifest): replace it
        shutil.rmtree(final)
    os.replace(tmp, final)
    echo(f"base {key}: held-out bits/byte {start_bpb:.3f} -> {end_bpb:.3f} in {manifest['seconds']:.0f} s; "
         f"saved to {final}")
    return final
