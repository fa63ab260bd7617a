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
from agents.text import decode_bytes, load_tokenizer
from layers import LevelsConfig, LevelStack
from layers.eval import Tally, token_bits


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

    @property
    def context(self) -> int:
        """The most tokens one forward pass may hold: the model's position limit (``max_position_embeddings``,
        GPT-2's ``n_positions``), 1024 when the config names none."""
        config = self.model.config
        return int(getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None) or 1024)

    def bits_per_byte(self, text: str, slots: list[str]) -> tuple[float, int]:
        """Bits per byte (:mod:`layers.eval`) of ``text`` under the base plus ``slots``; and the text's
        UTF-8 byte count. The first token is context only: its successors are scored, over the bytes they
        cover (the tokenizer's own offsets).

        A text longer than the model's context (:attr:`context`) is scored in strided windows: the first
        window scores all it holds, each later one scores the next ``context // 2`` tokens with the
        ``context`` tokens before them as context; every token is scored once.

        Raises:
            ValueError: the text is one token, or its scored tokens cover no bytes.
        """
        enc = self.tokenizer.encode_with_bytes(text)
        n_bytes = len(text.encode("utf-8"))
        if len(enc) < 2 or int(enc.nbytes[1:].sum()) < 1:
            raise ValueError(f"needs at least 2 tokens to score; the model's tokenizer makes {len(enc)} of it")
        ids, nbytes, n = enc.ids, enc.nbytes, len(enc)
        limit = self.context
        total = Tally()
        pos = 1  # the next token to score
        with self.stack.using(slots), torch.no_grad():
            while pos < n:
                end = min(n, pos + (limit if pos == 1 else max(1, limit // 2)))  # score ids[pos:end]
                start = max(0, end - 1 - limit)  # the window ids[start:end-1] holds at most `limit` tokens
                logits = self.model(ids[None, start:end - 1]).logits[:, pos - 1 - start:]  # (1, end-pos, V)
                bits = token_bits(logits, ids[None, pos:end])
                total += Tally(float(bits.double().sum()), float(nbytes[pos:end].sum()))
                pos = end
        return total.bits_per_byte, n_bytes

    def generate(self, prompt: str, slots: list[str], max_new_tokens: int, temperature: float, seed: int,
                 should_stop=lambda: False) -> bytes:
        """Sample (or greedy when temperature is 0) up to ``max_new_tokens`` tokens after ``prompt``; their
        bytes (:func:`agents.text.decode_bytes`: exact for a byte model, which may stop inside a UTF-8
        character); generation ends early at the tokenizer's end-of-text token (not returned).
        An empty prompt starts from the tokenizer's BOS (token 0 for the byte tokenizer)."""
        start = getattr(self.tokenizer, "bos_token_id", None)
        eos = getattr(getattr(self.tokenizer, "hf", None), "eos_token_id", None)
        prompt_ids = self.tokenizer.encode(prompt) if prompt else []
        ids = torch.tensor([prompt_ids or [start or 0]], dtype=torch.long)  # (1, T)
        gen = torch.Generator().manual_seed(seed)
        limit = self.context
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
                if eos is not None and int(nxt) == eos:
                    break
                out.append(int(nxt))
                ids = torch.cat([ids, nxt.view(1, 1)], dim=1)
        return decode_bytes(self.tokenizer, out)

    @property
    def base_path(self) -> str | None:
        """The base checkpoint directory, absolute (what an export names as ``base_model_name_or_path``);
        None for a base built from the config with random weights."""
        path = self.model_cfg.name_or_path
        return str(Path(path).expanduser().resolve()) if path else None

    def export(self, slot: str, source: str = "") -> dict[str, bytes]:
        """The slot's level as PEFT adapter files: relative path -> bytes. ``adapter_config.json`` names the
        base checkpoint directory (:attr:`base_path`); ``README.md`` says how to load the adapter onto it
        (``source``: where the level came from, e.g. ``swarm/text v12 of runs/first``)."""
        with tempfile.TemporaryDirectory() as tmp:
            directory = self.stack.export_peft(slot, Path(tmp) / "adapter", base_model_name_or_path=self.base_path)
            files = {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*"))
                     if p.is_file()}
        files["README.md"] = export_readme(self.base_path, source).encode()
        return files


def export_readme(base_path: str | None, source: str) -> str:
    """The README of an exported adapter: what it is and the lines that load it with PEFT."""
    if base_path:
        base = (f"The base is the checkpoint directory `{base_path}` (also `base_model_name_or_path` in\n"
                "`adapter_config.json`):\n\n```python\nimport json\nfrom pathlib import Path\n\n"
                "from peft import PeftModel\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
                "adapter = Path(\"ADAPTER_DIR\")  # this directory\n"
                "base_dir = json.loads((adapter / \"adapter_config.json\").read_text())[\"base_model_name_or_path\"]\n"
                "model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), str(adapter))\n"
                "tokenizer = AutoTokenizer.from_pretrained(base_dir)  # a byte-level base has none: use bytes\n```\n")
    else:
        base = ("The base was built from the run's config with random weights (`pretrain.enabled=false`, no\n"
                "`model.name_or_path`), so there is no checkpoint directory to name. Rebuild it with the\n"
                "project's code:\n\n```python\nfrom peft import PeftModel\n\nfrom agents.model import "
                "build_model\nfrom swarm.config import load_config\n\n"
                "base = build_model(load_config(\"RUN_DIR/config.yaml\").model)\n"
                "model = PeftModel.from_pretrained(base, \"ADAPTER_DIR\")\n```\n")
    return ("# A shared level as a PEFT LoRA adapter\n\nExported by `swarm query export`"
            + (f" from {source}" if source else "") + ".\n\n" + base)
