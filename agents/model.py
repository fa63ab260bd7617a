"""Base models: tiny byte-level HF causal LMs built from config, or any local checkpoint.

Nothing is ever downloaded: ``name_or_path`` must be a local directory. The tokenizer
that goes with a model is :func:`agents.text.load_tokenizer`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import AutoModelForCausalLM, GPT2Config, GPTNeoXConfig, LlamaConfig, PretrainedConfig
from transformers.utils import logging as hf_logging

from agents.config import ModelConfig
from layers.config import LevelsConfig, torch_dtype
from layers.hosted import SharedBase


def hf_config(cfg: ModelConfig) -> PretrainedConfig:
    """The transformers config of a model built from ``cfg`` (no special tokens: pure bytes)."""
    common = dict(vocab_size=cfg.vocab_size, bos_token_id=None, eos_token_id=None, pad_token_id=None)
    if cfg.arch == "llama":
        return LlamaConfig(hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
                           num_attention_heads=cfg.num_heads, intermediate_size=cfg.intermediate_size,
                           max_position_embeddings=cfg.max_positions, tie_word_embeddings=False, **common)
    if cfg.arch == "gpt2":
        return GPT2Config(n_embd=cfg.hidden_size, n_layer=cfg.num_layers, n_head=cfg.num_heads,
                          n_inner=cfg.intermediate_size, n_positions=cfg.max_positions, **common)
    return GPTNeoXConfig(hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
                         num_attention_heads=cfg.num_heads, intermediate_size=cfg.intermediate_size,
                         max_position_embeddings=cfg.max_positions, **common)


def build_model(cfg: ModelConfig, device: torch.device | str | None = None) -> nn.Module:
    """The base causal LM of ``cfg`` in eval mode (dropout off), its parameters in ``model.dtype``,
    on ``device`` (default CPU). Built or loaded on CPU, then moved: same seed, same weights on
    every device."""
    dtype = torch_dtype(cfg.dtype)
    if cfg.name_or_path:
        path = Path(cfg.name_or_path).expanduser()
        if not path.is_dir():
            raise ValueError(f"model.name_or_path: {str(path)!r} is not a local directory (nothing is downloaded)")
        hf_logging.disable_progress_bar()  # a local checkpoint loads at once: no bar in run tables and logs
        model = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True, dtype=dtype)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            model = AutoModelForCausalLM.from_config(hf_config(cfg), dtype=dtype)
    if device is not None:
        model = model.to(device)
    return model.eval()


def shared_base(cfg: ModelConfig, levels: LevelsConfig, device: torch.device | str | None = None) -> SharedBase:
    """ONE frozen base of ``cfg`` for the agents of a host (:mod:`layers.hosted`): pass it as
    ``Agent(..., base=)``; agents of another model config or other shared levels settings are refused."""
    return SharedBase(build_model(cfg, device), levels, key=cfg)


def position_limit(cfg: ModelConfig) -> int:
    """The most tokens one forward pass of ``cfg``'s model may hold (``max_position_embeddings``, GPT-2's
    ``n_positions``; 1024 when a checkpoint's config names none), read without loading weights."""
    if not cfg.name_or_path:
        return cfg.max_positions
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(Path(cfg.name_or_path).expanduser()), local_files_only=True)
    return int(getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None) or 1024)


def check_seq_len(model: ModelConfig, seq_len: int, what: str = "workload.seq_len") -> None:
    """Refuse windows longer than the model's position limit before any agent starts."""
    limit = position_limit(model)
    if seq_len > limit:
        source = model.name_or_path or "model.max_positions"
        raise ValueError(f"{what}={seq_len} exceeds the position limit {limit} of {source}; "
                         f"use {what}<={limit}")
