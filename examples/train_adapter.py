"""Train a PEFT LoRA adapter on one text file, outside any swarm: the adapter `swarm absorb` takes in.

    python examples/train_adapter.py BASE_DIR TEXT_FILE OUT_DIR [--rank 8] [--steps 150]
    swarm absorb OUT_DIR --level domain --run RUN_DIR --eval TEXT_FILE [--grow 8]

``BASE_DIR`` is a local Hugging Face checkpoint (e.g. a base from ``swarm pretrain-base`` under
runs/base/); the text is tokenized by the base's own tokenizer (bytes for a byte-level base) and
cut into windows of ``--seq-len`` tokens, of which every 8th is held out and scored before and
after. The adapter adapts ``q_proj``, ``v_proj``, ``up_proj`` and ``down_proj`` (the modules a
level stack adapts by default) and is saved with ``save_pretrained``. The session in
docs/absorb.md was made with it. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from agents.config import ModelConfig  # noqa: E402
from agents.text import load_tokenizer  # noqa: E402

TARGETS = ["q_proj", "v_proj", "up_proj", "down_proj"]


def windows(ids: list[int], seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, held out) windows of ``seq_len + 1`` tokens: every 8th window is held out."""
    n = len(ids) // (seq_len + 1)
    if n < 8:
        raise SystemExit(f"the text has {len(ids)} tokens: fewer than 8 windows of {seq_len + 1}")
    w = torch.tensor(ids[:n * (seq_len + 1)]).view(n, seq_len + 1)  # (n, T+1)
    held = torch.arange(n) % 8 == 7
    return w[~held], w[held]


def bits_per_token(model, w: torch.Tensor) -> float:
    with torch.no_grad():
        loss = F.cross_entropy(model(w[:, :-1]).logits.flatten(0, 1), w[:, 1:].flatten())
    return float(loss) / math.log(2)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", type=Path)
    parser.add_argument("text", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(args.seed)
    tokenizer = load_tokenizer(ModelConfig(name_or_path=str(args.base)))
    train, held = windows(tokenizer.encode(args.text.read_text(encoding="utf-8")), args.seq_len)
    base = AutoModelForCausalLM.from_pretrained(str(args.base), local_files_only=True)
    model = get_peft_model(base, LoraConfig(r=args.rank, lora_alpha=2 * args.rank, target_modules=TARGETS))
    before = bits_per_token(model, held)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=args.lr)
    gen = torch.Generator().manual_seed(args.seed)
    for step in range(1, args.steps + 1):
        batch = train[torch.randint(len(train), (args.batch,), generator=gen)]  # (B, T+1)
        loss = F.cross_entropy(model(batch[:, :-1]).logits.flatten(0, 1), batch[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == args.steps:
            print(f"step {step}: train {loss.item() / math.log(2):.3f} bits/token", flush=True)
    model.save_pretrained(args.out)
    print(f"held out ({len(held)} windows): {before:.3f} -> {bits_per_token(model, held):.3f} bits/token; "
          f"adapter r={args.rank} on {', '.join(TARGETS)} saved to {args.out}")


if __name__ == "__main__":
    main()
