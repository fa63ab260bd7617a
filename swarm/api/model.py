"""The model side of the query service: the base model with chosen shared levels loaded.

``MemoryModel`` holds one frozen base model and level stack built from a run's config.
Shared levels pulled from the servers are loaded into their slots (the stack level a
server fills: ``swarm/text`` fills ``swarm``); the local levels (context, agent) stay
zero, so what it computes is the swarm's shared memory alone. Calls are serialised by
the caller (one request at a time touches the stack).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from agents.config import ModelConfig
from agents.model import build_model
from agents.text import load_tokenizer
from layers import LevelsConfig, LevelStack
from layers.eval import bits_per_byte


class MemoryModel:
    """The query side's own copy of the base model with a level stack, into which the service loads
    shared levels to answer Generate, Score and ExportAdapter (CPU, one request at a time).
    """
    def __init__(self, model: ModelConfig, levels: LevelsConfig) -> None:
        self.model_cfg = model
        self.model = build_model(model)
        self.stack = LevelStack.attach(self.model, levels)
        self.tokenizer = load_tokenizer(model)
        self.loaded: dict[str, tuple[str, int]] = {}  # slot -> (server name, version)

    def load(self, slot: str, server: str, version: int, tensors: dict[str, torch.Tensor]) -> None:
        """Install a pulled level into ``slot`` (validated by the stack)."""
        self.stack.load_level_state(slot, tensors)
        self.loaded[slot] = (server, version)

    def holds(self, slot: str, server: str, version: int) -> bool:
        """True when ``slot`` already holds ``server``'s level at ``version`` (no reload needed)."""
        return self.loaded.get(slot) == (server, version)

    def bits_per_byte(self, text: str, slots: list[str]) -> tuple[float, int]:
        """Bits per byte (:func:`layers.eval.bits_per_byte`) of ``text`` under the base plus ``slots``;
        and the text's UTF-8 byte count. The first token is context only: its successors are scored,
        over the bytes they cover (the tokenizer's own offsets)."""
        enc = self.tokenizer.encode_with_bytes(text)
        n_bytes = len(text.encode("utf-8"))
        if len(enc) < 2 or int(enc.nbytes[1:].sum()) < 1:
            raise ValueError("text: needs at least 2 tokens to score")
        ids = enc.ids[None]  # (1, T)
        with self.stack.using(slots), torch.no_grad():
            logits = self.model(ids[:, :-1]).logits  # (1, T-1, V)
        return bits_per_byte(logits, ids[:, 1:], target_bytes=enc.nbytes[None, 1:]), n_bytes

    def generate(self, prompt: str, slots: list[str], max_new_tokens: int, temperature: float, seed: int,
                 should_stop=lambda: False) -> str:
        """Sample (or greedy when temperature is 0) ``max_new_tokens`` after ``prompt``."""
        start = getattr(self.tokenizer, "bos_token_id", None)
        prompt_ids = self.tokenizer.encode(prompt) if prompt else []
        ids = torch.tensor([prompt_ids or [start or 0]], dtype=torch.long)  # (1, T): an empty prompt starts at BOS
        gen = torch.Generator().manual_seed(seed)
        limit = getattr(self.model.config, "max_position_embeddings", None) or getattr(
            self.model.config, "n_positions", 1024)
        out = []
        with self.stack.using(slots), torch.no_grad():
            for _ in range(max_new_tokens):
                if should_stop():
                    raise TimeoutError("deadline reached while generating")
                logits = self.model(ids[:, -limit:]).logits[0, -1].float()  # (V,)
                if temperature > 0:
                    nxt = torch.multinomial(torch.softmax(logits / temperature, -1), 1, generator=gen)
                else:
                    nxt = logits.argmax(-1, keepdim=True)
                out.append(int(nxt))
                ids = torch.cat([ids, nxt.view(1, 1)], dim=1)
        return self.tokenizer.decode(out)

    def export(self, slot: str) -> dict[str, bytes]:
        """The slot's level as PEFT adapter files: relative path -> bytes."""
        with tempfile.TemporaryDirectory() as tmp:
            directory = self.stack.export_peft(slot, Path(tmp) / "adapter",
                                               base_model_name_or_path=self.model_cfg.name_or_path)
            return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*"))
                    if p.is_file()}
