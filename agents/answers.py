"""Answering prompts through the trajectory cache, and internalising what is asked often.

Functions of an :class:`agents.agent.Agent` (kept apart from its learning loop). Answers
use the agent's knowledge levels, every level but ``context``: the context level is the
working memory of the file being read and resets at every boundary. Prompts and answers are
bytes (the cache's keys and values); the model sees them through the agent's own tokenizer
(:func:`agents.text.encode_bytes`), and ``n`` counts tokens.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from agents.text import decode_bytes, encode_bytes


def _ids(agent, data: bytes) -> torch.Tensor:
    """(1, T) token ids of ``data`` on the agent's device."""
    return torch.tensor([encode_bytes(agent.tokenizer, data)], dtype=torch.long, device=agent.device)


def greedy(agent, prompt: bytes, n: int) -> bytes:
    """Up to ``n`` tokens greedily decoded after ``prompt`` with the agent's knowledge levels, as bytes;
    decoding stops early at the tokenizer's end-of-text token (not returned)."""
    ids = _ids(agent, prompt)  # (1, T)
    new: list[int] = []
    eos = agent.tokenizer.eos_token_id
    with agent.stack.using(agent.stack.levels[1:]), torch.no_grad():
        for _ in range(n):
            nxt = agent.model(ids).logits[:, -1].argmax(-1, keepdim=True)  # (1, 1)
            if eos is not None and int(nxt) == eos:
                break
            new.append(int(nxt))
            ids = torch.cat([ids, nxt], dim=1)
    return decode_bytes(agent.tokenizer, new)


def respond(agent, prompt: bytes, versions: dict[str, int], max_new_tokens: int = 32) -> tuple[bytes, bool]:
    """The answer to ``prompt`` and whether it came from the cache (keyed by the shared versions held)."""
    if not prompt:
        raise ValueError("respond: the prompt is empty")
    entry = agent.cache.get(prompt, versions)
    if entry is not None:
        return entry.answer, True
    answer = greedy(agent, prompt, max_new_tokens)
    agent.cache.put(prompt, versions, answer, producer=agent.id)
    return answer, False


def internalise(agent) -> list[dict[str, Any]]:
    """Train the agent level on every due cache entry until greedy decoding reproduces its answer
    (checked every ``check_every`` steps) or ``step_budget`` runs out; each entry then leaves the cache.

    This is plain Adam on the agent level's B (teacher forcing on the answer's tokens), apart from the
    level's section-6 dynamics: a memorisation pass, not stream learning.
    """
    cfg, out = agent.cache.config, []
    for entry in agent.cache.due():
        if entry.key not in agent.cache.entries:  # superseded by an answer to its prompt internalised just before
            continue
        prompt, answer = _ids(agent, entry.prompt), _ids(agent, entry.answer)  # (1, P), (1, A)
        seq = torch.cat([prompt, answer], dim=1)  # (1, P+A)
        n_prompt, n_answer = prompt.shape[1], answer.shape[1]
        params = [m.B[agent.slow] for m in agent.stack.modules.values()]
        steps = 0
        with agent.stack.using(agent.stack.levels[1:]):
            try:
                agent.stack.set_trainable([agent.slow])
                opt = torch.optim.Adam(params, lr=cfg.lr)
                done = greedy(agent, entry.prompt, n_answer) == entry.answer  # maybe known already
                while steps < cfg.step_budget and not done:
                    logits = agent.model(seq[:, :-1]).logits[:, n_prompt - 1:]  # (1, A, V): predictions of the answer
                    loss = F.cross_entropy(logits.flatten(0, 1).float(), seq[0, n_prompt:])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    steps += 1
                    if steps % cfg.check_every == 0 or steps == cfg.step_budget:
                        done = greedy(agent, entry.prompt, n_answer) == entry.answer
            finally:
                for p in params:
                    p.grad = None
                agent.stack.set_trainable([agent.fast])
        outcome = "internalised" if done else "failed"
        agent.cache.retire(entry.key, outcome)
        out.append({"key": entry.key, "outcome": outcome, "steps": steps, "hits": entry.hits})
    return out
