"""The trajectory cache: hits, LRU bound, provenance; then a prompt asked often becomes the agent's own."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.agent import Agent
from agents.answers import greedy
from agents.config import AgentConfig, CacheConfig, ModelConfig, WorkloadConfig
from agents.topology import agent_specs
from agents.trajectory import TrajectoryCache
from cluster.config import RuntimeConfig
from cluster.worker import AgentWorker
from layers import LevelsConfig


def test_hits_are_per_prompt_and_shared_version():
    cache = TrajectoryCache(CacheConfig(internalise_after=2))
    cache.put(b"p", {"swarm": 1}, b"a", producer="x")
    assert cache.get(b"p", {"swarm": 2}) is None  # new shared knowledge: a miss
    assert cache.get(b"p", {"swarm": 1}).answer == b"a"
    assert cache.due() == []
    cache.get(b"p", {"swarm": 1})
    (entry,) = cache.due()
    assert entry.hits == 2 and len(entry.provenance) == 64
    assert cache.stats() == {"entries": 1, "lookups": 3, "hits": 2, "confirmed": 0, "internalised": 0, "failed": 0,
                             "evicted": 0, "hit_rate": pytest.approx(2 / 3)}
    cache.put(b"p", {"swarm": 2}, b"b", producer="x")  # the same prompt at a later version: superseded below
    cache.put(b"q", {"swarm": 1}, b"c", producer="x")
    cache.retire(entry.key, "internalised")
    stats = cache.stats()
    assert (stats["entries"], stats["internalised"], stats["evicted"]) == (1, 1, 2) and cache.get(b"q", {"swarm": 1})
    with pytest.raises(ValueError, match="outcome"):
        cache.retire("k", "lost")


def test_a_document_holding_a_cached_conversation_as_the_service_showed_it_makes_that_entry_due():
    cache = TrajectoryCache(CacheConfig(internalise_after=3))
    raw = b"ok \xff\xfe!"  # an answer that is not UTF-8: the service shows it with replacement characters
    asked = cache.put(b"say: ", {"swarm": 1}, raw, producer="x")
    other = cache.put(b"other: ", {"swarm": 1}, b"no", producer="x")
    assert cache.confirm("say: ok \ufffd\ufffd? (a different answer)") == 0 and cache.due() == []
    assert cache.confirm("user> say: ok \ufffd\ufffd!\nthanks") == 1  # the conversation inside a longer document
    assert [e.key for e in cache.due()] == [asked.key] and other.hits == 0
    assert cache.confirm("say: ok \ufffd\ufffd!") == 0  # already due: confirmed once
    assert cache.stats()["confirmed"] == 1
    state = cache.state_dict()
    del state["counts"]["confirmed"]  # a checkpoint from before confirmations
    cache.load_state_dict(state)
    assert cache.stats()["confirmed"] == 0 and [e.key for e in cache.due()] == [asked.key]


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 5), st.lists(st.tuples(st.booleans(), st.integers(0, 7)), max_size=40))
def test_the_cache_never_exceeds_its_bound_and_evicts_the_least_recent(bound, ops):
    cache = TrajectoryCache(CacheConfig(max_entries=bound))
    recent: list[int] = []
    for is_put, k in ops:
        prompt = bytes([k])
        if is_put:
            cache.put(prompt, {}, b"a", producer="x")
            recent = [r for r in recent if r != k] + [k]
        elif cache.get(prompt, {}) is not None:
            recent = [r for r in recent if r != k] + [k]
        recent = recent[-bound:]
        assert len(cache.entries) <= bound
        assert [e.prompt[0] for e in cache.entries.values()] == recent


def test_the_state_round_trips():
    cache = TrajectoryCache()
    cache.put(b"\x00\xffp", {"swarm": 3}, b"ans", producer="x")
    cache.get(b"\x00\xffp", {"swarm": 3})
    other = TrajectoryCache()
    other.load_state_dict(cache.state_dict())
    assert other.stats() == cache.stats() and list(other.entries.values()) == list(cache.entries.values())


def test_an_answer_asked_often_is_served_from_the_cache_then_internalised_then_evicted():
    workload = WorkloadConfig(kind="synthetic", topology={"d": {"t": ["a1"]}}, seq_len=32, batch_size=4,
                              eval_windows=2)
    agent = Agent(agent_specs(workload)[0], model=ModelConfig(hidden_size=64, num_layers=2, intermediate_size=128),
                  levels=LevelsConfig(names=["context", "agent"], rank=16), workload=workload,
                  agent=AgentConfig(lr_context=3e-2, lr_agent=3e-2),
                  cache=CacheConfig(internalise_after=3, step_budget=200, check_every=5, lr=3e-2))
    worker = AgentWorker(agent, {}, RuntimeConfig(eval_every=10**6))
    prompt = b"def answer(question):\n    return "
    first = worker.respond(prompt, max_new_tokens=12)
    assert not first["cached"]
    worker.run(20)  # the agent keeps learning its stream: its own greedy answer drifts
    assert greedy(agent, prompt, 12) != first["answer"], "the test needs an answer the agent no longer gives"
    for _ in range(3):
        again = worker.respond(prompt, max_new_tokens=12)
        assert again["cached"] and again["answer"] == first["answer"]
    worker.run(1)  # due: internalised within the step
    stats = worker.record()["cache"]
    assert stats["internalised"] == 1 and stats["evicted"] == 1 and stats["entries"] == 0
    assert stats["hit_rate"] == pytest.approx(3 / 4)
    assert greedy(agent, prompt, 12) == first["answer"]  # the model alone gives the cached answer now
    assert not worker.respond(prompt, max_new_tokens=12)["cached"]  # and it is no longer a cache entry
