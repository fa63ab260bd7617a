"""Base models: tiny byte-level HF causal LMs built from config, or any local checkpoint.

Nothing is ever downloaded: ``name_or_path`` must be a local directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModelForCausalLM, GPT2Config, GPTNeoXConfig, LlamaConfig, PretrainedConfig

from layers.config import DTYPES

ARCHS = ("llama", "gpt2", "gpt_neox")


@dataclass
class ModelConfig:
    """The frozen base model (the ``model`` config group).

    Attributes:
        name_or_path: a local HF checkpoint directory; when set, the fields below
            except ``dtype`` are ignored. ``None`` builds a fresh model from them.
        arch: family of the built model: llama, gpt2 or gpt_neox.
        vocab_size: 256 for the byte-level tokenizer.
        hidden_size, num_layers, num_heads, intermediate_size, max_positions: shape.
        seed: initialisation seed of a built model (same seed, same weights).
        dtype: parameter dtype.
    """

    name_or_path: str | None = None
    arch: str = "llama"
    vocab_size: int = 256
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 688
    max_positions: int = 1024
    seed: int = 0
    dtype: str = "float32"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first invalid field."""
        if self.arch not in ARCHS:
            raise ValueError(f"model.arch: {self.arch!r} is not one of {list(ARCHS)}")
        if self.dtype not in DTYPES:
            raise ValueError(f"model.dtype: {self.dtype!r} is not one of {sorted(DTYPES)}")
        for key in ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size", "max_positions"):
            if getattr(self, key) < 1:
                raise ValueError(f"model.{key}: must be >= 1, got {getattr(self, key)}")
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"model.hidden_size ({self.hidden_size}) must be divisible by model.num_heads ({self.num_heads})"
            )


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


def build_model(cfg: ModelConfig) -> nn.Module:
    """The base causal LM of ``cfg`` in eval mode (dropout off), on CPU."""
    dtype = DTYPES[cfg.dtype]
    if cfg.name_or_path:
        path = Path(cfg.name_or_path).expanduser()
        if not path.is_dir():
            raise ValueError(f"model.name_or_path: {str(path)!r} is not a local directory (nothing is downloaded)")
        model = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True, dtype=dtype)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            model = AutoModelForCausalLM.from_config(hf_config(cfg), dtype=dtype)
    return model.eval()


class ByteTokenizer:
    """Bytes are tokens: id = byte value (vocabulary 256, no special tokens)."""

    vocab_size = 256

    def encode(self, text: str | bytes) -> list[int]:
        data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        return list(data)

    def decode(self, ids: list[int] | torch.Tensor) -> str:
        values = ids.tolist() if isinstance(ids, torch.Tensor) else ids
        return bytes(int(i) for i in values).decode("utf-8", errors="replace")
