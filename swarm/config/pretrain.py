"""The ``pretrain`` section: the corpus, schedule and cache of ``swarm pretrain-base``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from layers.config import check_fields


def _default_packages() -> list[str]:
    return ["asyncio", "unittest", "logging", "xml", "multiprocessing", "importlib", "concurrent", "ctypes",
            "argparse", "typing", "inspect", "dataclasses", "pathlib", "subprocess", "threading", "tarfile",
            "zipfile", "pickle", "pdb", "doctest"]


@dataclass
class PretrainConfig:
    """The ``pretrain`` section. Attributes:
        enabled: ``swarm run`` and ``swarm demo`` start from this pretrained base (built on first use,
            cached) when ``model.name_or_path`` is unset; false: the model is built from config
            with random weights.
        packages: stdlib packages (or modules) of the pretraining corpus; none may be an agent's.
        vocab_size: tokens of the byte-level BPE tokenizer trained on the corpus (>= 257: the 256
            byte symbols and ``<|endoftext|>``); 256: plain bytes, no tokenizer.
        steps, batch_size, seq_len, lr, warmup, weight_decay: AdamW with linear warm-up, cosine decay.
        eval_windows: held-out windows for the before/after bits per byte.
        seed: data seed (the weights' init seed is ``model.seed``).
        cache_dir: where bases are cached, one directory per key.
    """

    enabled: bool = False
    packages: list[str] = field(default_factory=_default_packages)
    vocab_size: int = 2048
    steps: int = 300
    batch_size: int = 8
    seq_len: int = 128
    lr: float = 2e-3
    warmup: int = 30
    weight_decay: float = 0.01
    eval_windows: int = 64
    seed: int = 0
    cache_dir: str = "runs/base"

    def __post_init__(self) -> None:
        check_fields("pretrain", self, packages=len(self.packages) > 0, warmup=self.warmup >= 0,
                     vocab_size=self.vocab_size >= 256,
                     lr=math.isfinite(self.lr) and self.lr > 0, weight_decay=self.weight_decay >= 0,
                     **{k: getattr(self, k) >= 1 for k in ("steps", "batch_size", "seq_len", "eval_windows")})
