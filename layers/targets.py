"""Which modules of a HuggingFace causal LM the level stack adapts."""

from __future__ import annotations

import re
from collections.abc import Sequence

from torch import nn
from transformers.pytorch_utils import Conv1D

# Linear module name suffixes per model family (config.model_type).
FAMILY_TARGETS: dict[str, list[str]] = {
    **{
        t: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
        for t in ("llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2", "olmo", "olmo2")
    },
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    "gpt_neox": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
    "phi3": ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
    "falcon": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
}


def is_adaptable(module: nn.Module) -> bool:
    """True for the module types the stack can wrap: ``nn.Linear`` and GPT-2's ``Conv1D``."""
    return isinstance(module, (nn.Linear, Conv1D))


def in_out_features(module: nn.Module) -> tuple[int, int]:
    """(d_in, d_out) of a Linear (weight d_out x d_in) or Conv1D (weight d_in x d_out)."""
    if isinstance(module, Conv1D):
        d_in, d_out = module.weight.shape
        return int(d_in), int(d_out)
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    raise TypeError(f"cannot adapt {type(module).__name__}: only nn.Linear and Conv1D are supported")


def matches(name: str, pattern: str) -> bool:
    """PEFT-style match: full name or dotted suffix; ``re:<regex>`` full-matches the name."""
    if pattern.startswith("re:"):
        return re.fullmatch(pattern[3:], name) is not None
    return name == pattern or name.endswith("." + pattern)


def select_targets(model: nn.Module, patterns: Sequence[str] | None = None) -> list[str]:
    """Names of the modules to adapt, in model order.

    Args:
        model: a HuggingFace causal LM (or any module tree).
        patterns: name patterns (see ``matches``); ``None`` uses the family defaults
            of ``model.config.model_type``, or every Linear/Conv1D except the output
            embedding for an unknown family.

    Raises:
        ValueError: a pattern matches nothing, or matches a module that is not a
            Linear/Conv1D (the message names it).
    """
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    named = [(n, m) for n, m in model.named_modules() if n]
    if patterns is None:
        model_type = getattr(getattr(model, "config", None), "model_type", None)
        patterns = FAMILY_TARGETS.get(model_type or "")
        if patterns is None:
            return [n for n, m in named if is_adaptable(m) and m is not output]
    for pattern in patterns:
        hits = [n for n, _ in named if matches(n, pattern)]
        if not hits:
            raise ValueError(f"target module pattern {pattern!r} matches no module of {type(model).__name__}")
        for n in hits:
            module = model.get_submodule(n)
            if not is_adaptable(module):
                raise ValueError(
                    f"target module {n!r} (pattern {pattern!r}) is a {type(module).__name__}; "
                    "only nn.Linear and Conv1D can be adapted"
                )
    return [n for n, m in named if any(matches(n, p) for p in patterns) and is_adaptable(m)]
