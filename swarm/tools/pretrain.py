"""``swarm pretrain-base``: a tokenizer and a small base model pre-trained once, cached by content.

Adapting a random network says little about adapters, so runs and experiments start from
a base pre-trained on standard-library packages set aside for it: disjoint from every
agent of the configured topology (an overlap is refused by name). A byte-level BPE
tokenizer of ``pretrain.vocab_size`` tokens is trained on the corpus with the
``tokenizers`` library (256: plain bytes, no tokenizer), then the model of ``model`` is
pre-trained on it. The result is cached under ``<cache_dir>/<key>/``, where the key is a
SHA-256 of the model config, the pretraining config and the text of every corpus file,
so the same inputs always reuse the same base and any change trains a new one. The
directory is a standard HF checkpoint: ``config.json``, safetensors weights and the
tokenizer files, loadable by plain ``AutoModelForCausalLM`` / ``AutoTokenizer``, plus
``swarm_base.json`` (what was trained, and the before/after bits per byte). Use it with
``model.name_or_path=<dir>``; with ``pretrain.enabled`` (the default config), ``swarm run``
and ``swarm demo`` do that themselves.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from agents.model import build_model
from agents.sources import Document, stdlib_documents
from agents.text import BASE_MANIFEST, ByteTokenizer, Encoded, HFTokenizer, Tokenizer, eval_windows, sample_windows
from agents.topology import agent_specs

MANIFEST = BASE_MANIFEST
SPECIAL = "<|endoftext|>"  # BOS/EOS/padding of the trained tokenizer: id 0


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


def base_key(cfg, docs: Sequence[Document]) -> str:
    """SHA-256 (16 hex digits) of the model config, the pretraining config and every corpus document."""
    model = dataclasses.asdict(cfg.model) | {"name_or_path": None}
    pre = dataclasses.asdict(cfg.pretrain) | {"cache_dir": None, "enabled": None}
    h = hashlib.sha256(json.dumps({"model": model, "pretrain": pre}, sort_keys=True).encode())
    for doc in docs:
        h.update(Path(doc.source).name.encode() + b"\0" + doc.text.encode("utf-8"))
    return h.hexdigest()[:16]


def train_tokenizer(texts: Sequence[str], vocab_size: int):
    """A byte-level BPE ``PreTrainedTokenizerFast`` of ``vocab_size`` tokens (id 0: ``<|endoftext|>``) trained
    on ``texts``; every string encodes (the 256 byte symbols are always in the vocabulary)."""
    from tokenizers import Tokenizer as RawTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = RawTokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[SPECIAL], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    raw.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=raw, bos_token=SPECIAL, eos_token=SPECIAL, pad_token=SPECIAL,
                                   model_max_length=1 << 30)


def _encode_all(tokenizer: Tokenizer, docs: Sequence[Document]) -> Encoded:
    """``docs`` encoded and concatenated into one stream (windows may cross a document boundary)."""
    parts = [tokenizer.encode_with_bytes(d.text) for d in docs]
    return Encoded(torch.cat([p.ids for p in parts]), torch.cat([p.nbytes for p in parts]))


def pretrain_base(cfg, *, progress: bool = True, echo: Callable[[str], object] = print) -> Path:
    """The cached base for ``cfg`` (trained now if missing); returns its directory."""
    check_disjoint(cfg)
    if cfg.model.name_or_path:
        raise ValueError("model.name_or_path: pretrain-base builds the model from config; unset it")
    pre = cfg.pretrain
    corpus = stdlib_documents(pre.packages)
    train_docs, held_docs = list(corpus.train), list(corpus.held_out)
    key = base_key(cfg, [*train_docs, *held_docs])
    final = Path(pre.cache_dir) / key
    if (final / MANIFEST).is_file():
        echo(f"base {key}: cached at {final}")
        return final
    t0 = time.time()
    hf_tokenizer = None if pre.vocab_size == 256 else train_tokenizer([d.text for d in train_docs], pre.vocab_size)
    tokenizer: Tokenizer = ByteTokenizer() if hf_tokenizer is None else HFTokenizer(hf_tokenizer)
    model_cfg = dataclasses.replace(cfg.model, vocab_size=tokenizer.vocab_size)
    model = build_model(model_cfg).train()
    held = eval_windows([tokenizer.encode_with_bytes(d.text) for d in held_docs], pre.seq_len, pre.eval_windows)
    data = _encode_all(tokenizer, train_docs)  # one stream; windows never see held-out files
    gen = torch.Generator().manual_seed(pre.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=pre.lr, weight_decay=pre.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, pre.warmup)) * 0.5 * (
        1 + math.cos(math.pi * min(1.0, s / pre.steps))))
    start_bpb = held.bits_per_byte(model.eval())
    model.train()
    columns = [TextColumn("pretrain"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[loss]}"),
               TimeRemainingColumn()]
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task("steps", total=pre.steps, loss="")
        for _ in range(pre.steps):
            w = sample_windows(data, pre.batch_size, pre.seq_len, gen)  # ids (B, T+1)
            logits = model(w.inputs).logits  # (B, T, V)
            loss = F.cross_entropy(logits.flatten(0, 1), w.targets.flatten())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            bar.update(task, advance=1, loss=f"{w.loss_bits_per_byte(loss):.3f} bits/byte")
    model.eval()
    end_bpb = held.bits_per_byte(model)
    tmp = final.with_name(f".tmp-{key}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one small shard: our own bar said enough
    model.save_pretrained(tmp, safe_serialization=True)
    if hf_tokenizer is not None:
        hf_tokenizer.save_pretrained(tmp)
    manifest = {"key": key, "model": dataclasses.asdict(model_cfg), "pretrain": dataclasses.asdict(pre),
                "tokenizer": "bytes" if hf_tokenizer is None else f"byte-level BPE, {tokenizer.vocab_size} tokens",
                "train_files": len(train_docs), "held_out_files": len(held_docs),
                "train_bytes": int(data.nbytes.sum()), "train_tokens": len(data),
                "bpb_start": start_bpb, "bpb_end": end_bpb, "seconds": time.time() - t0,
                "byte_level": hf_tokenizer is None}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():  # a half-written leftover (no manifest): replace it
        shutil.rmtree(final)
    os.replace(tmp, final)
    echo(f"base {key}: held-out bits/byte {start_bpb:.3f} -> {end_bpb:.3f} in {manifest['seconds']:.0f} s "
         f"({manifest['tokenizer']}); saved to {final}")
    return final


def with_pretrained_base(cfg, load: Callable[[list[str]], object], overrides: Sequence[str], *,
                         progress: bool = True, echo: Callable[[str], object] = print):
    """``(cfg, overrides)`` running on the cached pretrained base when ``pretrain.enabled`` and no
    ``model.name_or_path`` is given: the base is built on first use, then taken through
    ``model.name_or_path`` like any local checkpoint (``load(overrides)`` re-reads the config).
    Otherwise both come back unchanged."""
    if not cfg.pretrain.enabled or cfg.model.name_or_path:
        return cfg, list(overrides)
    base = pretrain_base(cfg, progress=progress, echo=echo)
    # absolute: a run directory is served and resumed from any working directory
    overrides = [*overrides, f"model.name_or_path={Path(base).resolve()}"]
    return load(overrides), overrides
