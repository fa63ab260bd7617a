"""Shared fixtures: a table of tiny HF causal LMs that run on CPU (nothing downloaded)."""

from __future__ import annotations

import os

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, GPTNeoXConfig, LlamaConfig, Qwen2Config

os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # hermetic: no token auth for local test clusters
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

_COMMON = dict(vocab_size=256, bos_token_id=None, eos_token_id=None, pad_token_id=None)

# name -> (config, expected adapted suffixes)
TINY_MODELS = {
    "llama": (
        lambda: LlamaConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                            intermediate_size=96, tie_word_embeddings=False, **_COMMON),
        {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"},
    ),
    "qwen2": (
        lambda: Qwen2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                            intermediate_size=96, **_COMMON),
        {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"},
    ),
    "gpt2": (
        lambda: GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=128, **_COMMON),
        {"c_attn", "c_proj", "c_fc"},
    ),
    "gpt_neox": (
        lambda: GPTNeoXConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96,
                              **_COMMON),
        {"query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"},
    ),
}


def make_tiny(name: str, seed: int = 0) -> torch.nn.Module:
    """A fresh tiny model of family ``name``; same seed, same weights."""
    config, _ = TINY_MODELS[name]
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config()).eval()


@pytest.fixture(params=sorted(TINY_MODELS))
def family(request) -> str:
    return request.param


@pytest.fixture
def tokens() -> torch.Tensor:
    return torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole suite (starting Ray takes seconds); torn down at the end."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, namespace="swarm-tests", log_to_driver=False,
             configure_logging=False)
    yield ray
    ray.shutdown()


def randomize(stack, std: float = 0.05, seed: int = 0) -> None:
    """Give every level of ``stack`` distinct random B values."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for b in stack.parameters():
            b.copy_(torch.randn(b.shape, generator=gen, dtype=b.dtype) * std)
