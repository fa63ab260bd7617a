"""SnippetFinder feeds the agents' held-out windows through the model and finds the context a circuit reads."""

import torch

from swarm.api.circuit_snippets import SnippetFinder
from swarm.api.model import MemoryModel
from swarm.config import load_config
from tests.cluster.test_runtime import OVERRIDES


def test_a_circuit_aimed_at_one_context_finds_exactly_that_context():
    cfg = load_config("swarm", OVERRIDES)
    memory = MemoryModel(cfg.model, cfg.levels)
    finder = SnippetFinder(cfg, memory, windows_per_agent=4)
    server = "swarm/red"
    agents = finder.agents_below(server)
    assert agents and all("/red/" in a for a in agents)
    assert finder.chain(server)[0] == server and len(finder.chain(server)) == len(cfg.levels.names) - 2
    module = next(iter(memory.stack.modules))
    ids = torch.cat([finder._agent_windows(a)[0] for a in agents])  # (N, T)
    h = finder._read_inputs(ids, [module], [finder.cfg_slot(s) for s in finder.chain(server)])[module]  # (N, T, R)
    # aim the read direction at the position of largest ||P x||: no other position can read more along it
    norms = h.norm(dim=-1)
    n, t = divmod(int(norms.argmax()), norms.shape[1])
    w = h[n, t] / h[n, t].norm()
    best = finder.find(server, [{"module": module, "w": w, "strength": 0.5}], k=3)[0]
    assert len(best) == 3 and abs(best[0].activation - float(norms[n, t])) < 1e-3
    tokens = [row for a in agents for row in finder._agent_windows(a)[1]]
    assert best[0].focus == tokens[n][t] and best[0].source == agents[n // 4]
    assert (best[0].before + best[0].focus).endswith(b"".join(tokens[n][max(0, t - 3):t + 1]))
    assert [s.activation for s in best] == sorted((s.activation for s in best), reverse=True)
    # the reversed circuit reads that context as its least
    worst = finder.find(server, [{"module": module, "w": w, "strength": -0.5}], k=1)[0][0]
    assert (worst.window, worst.position) != (n, t)
