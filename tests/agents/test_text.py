"""The tokenizer-general text path: byte counts, windows, and bits per byte whatever the tokenizer."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.config import ModelConfig, WorkloadConfig
from agents.model import build_model
from agents.sources import package_files
from agents.text import (
    ByteTokenizer,
    HFTokenizer,
    Windows,
    eval_positions,
    eval_windows,
    load_tokenizer,
    sample_windows,
)
from agents.topology import agent_specs
from agents.workload import Workload
from layers.eval import model_bits_per_byte
from swarm.tools.pretrain import train_tokenizer

CORPUS = ["def f(x):\n    return x + 1\n", "café — naïve 日本語 🙂\n", "class A:\n    pass\n" * 20]


@pytest.fixture(scope="module")
def bpe():
    return HFTokenizer(train_tokenizer(CORPUS * 5, 300))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_bpe_byte_counts_sum_to_the_utf8_length(bpe, text):
    enc = bpe.encode_with_bytes(text)
    assert int(enc.nbytes.sum()) == len(text.encode("utf-8"))
    assert bool((enc.nbytes >= 0).all()) and len(enc.ids) == len(enc.nbytes)
    assert bpe.decode(enc.ids) == text  # byte-level BPE is lossless


@given(st.text(max_size=100))
def test_byte_tokenizer_counts_one_byte_per_token(text):
    enc = ByteTokenizer().encode_with_bytes(text)
    assert enc.ids.tolist() == list(text.encode("utf-8")) and bool((enc.nbytes == 1).all())


def test_windows_check_their_shapes():
    with pytest.raises(ValueError, match="ids \\(N, T\\+1\\) and target_bytes \\(N, T\\)"):
        Windows(torch.zeros(2, 5, dtype=torch.long), torch.ones(2, 5, dtype=torch.long))
    w = sample_windows(ByteTokenizer().encode_with_bytes("abc"), 3, 8, torch.Generator().manual_seed(0))
    assert w.ids.shape == (3, 9) and w.target_bytes.shape == (3, 8)  # shorter documents repeat


def test_byte_tokenizer_windows_are_the_raw_bytes_at_spread_positions():
    """On the byte tokenizer, an agent's held-out windows are exactly raw bytes of its held-out files,
    taken at the spread positions (not the top of each file), so bits per byte is that of those bytes."""
    cfg = WorkloadConfig(kind="stdlib", topology={"d": {"t": ["json"]}}, seq_len=32, eval_windows=6)
    held = Workload(cfg, agent_specs(cfg)[0]).held_out
    files = package_files("json")[cfg.held_out_every - 1::cfg.held_out_every]
    data = [torch.tensor(list(f.read_bytes())) for f in files]
    positions = eval_positions([len(d) for d in data], 32, 6)
    expected = torch.stack([data[d][s:s + 33] for d, s in positions])
    assert torch.equal(held.ids, expected) and bool((held.target_bytes == 1).all())
    assert max(s for _, s in positions) > 1000  # reaches deep into the files
    model = build_model(ModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64))
    assert held.bits_per_byte(model) == model_bits_per_byte(model, expected)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 400), min_size=1, max_size=8), st.integers(1, 40), st.integers(1, 300))
def test_eval_positions_are_distinct_in_range_and_spread(lengths, seq_len, n):
    total = sum(max(0, x - seq_len) for x in lengths)
    if total == 0:
        with pytest.raises(ValueError, match="no evaluation window"):
            eval_positions(lengths, seq_len, n)
        return
    pos = eval_positions(lengths, seq_len, n)
    assert len(pos) == min(n, total)
    assert all(0 <= s and s + seq_len + 1 <= lengths[d] for d, s in pos)  # every window fits its document
    assert pos == sorted(set(pos))  # distinct, in document order
    # one window per stratum of the concatenated starts: stratum k of total/len(pos) starts holds window k
    before = [sum(max(0, x - seq_len) for x in lengths[:d]) for d in range(len(lengths))]
    flat = [before[d] + s for d, s in pos]
    m = len(pos)
    assert all(k * total // m <= g and g * m < (k + 1) * total for k, g in enumerate(flat))
    assert pos == eval_positions(lengths, seq_len, n)  # deterministic


def test_eval_positions_give_long_files_more_windows():
    pos = eval_positions([1000, 100_000, 10], 64, 256)
    per_doc = [sum(1 for d, _ in pos if d == i) for i in range(3)]
    assert per_doc[2] == 0 and per_doc[0] in (2, 3) and sum(per_doc) == 256
    starts = [s for d, s in pos if d == 1]
    assert starts[0] < 1000 and starts[-1] > 98_000  # from the top of the file to its end


def test_bpe_bits_per_byte_equals_a_per_document_brute_force(bpe):
    """Pooled over windows, bits per byte = sum of -log2 p(token) over the scored tokens / the bytes they cover,
    computed here one document at a time, token by token."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(vocab_size=bpe.vocab_size, hidden_size=32, num_layers=1, num_heads=2,
                                    intermediate_size=64))
    docs = [bpe.encode_with_bytes(t) for t in CORPUS]
    T = 4
    windows = eval_windows(docs, T, 100)
    bits = nbytes = 0.0
    with torch.no_grad():
        for d, start in eval_positions([len(doc) for doc in docs], T, 100):
            doc = docs[d]
            ids = doc.ids[start:start + T + 1]
            logp = torch.log_softmax(model(ids[None, :-1]).logits[0].double(), -1)  # (T, V)
            for t in range(T):
                bits -= float(logp[t, ids[t + 1]]) / math.log(2)
                nbytes += int(doc.nbytes[start + t + 1])
    assert windows.bits_per_byte(model) == pytest.approx(bits / nbytes, rel=1e-5)
    # per byte of text, not per token: the same figure would be far off with one byte per token
    assert model_bits_per_byte(model, windows.ids) > 1.3 * windows.bits_per_byte(model)


def test_load_tokenizer_for_a_checkpoint(tmp_path, bpe):
    assert isinstance(load_tokenizer(ModelConfig()), ByteTokenizer)
    with pytest.raises(ValueError, match="holds no tokenizer"):
        load_tokenizer(ModelConfig(name_or_path=str(tmp_path)))
    bpe.hf.save_pretrained(tmp_path)
    loaded = load_tokenizer(ModelConfig(name_or_path=str(tmp_path)))
    assert loaded.vocab_size == bpe.vocab_size and loaded.encode(CORPUS[1]) == bpe.encode(CORPUS[1])


def test_an_agent_refuses_a_tokenizer_larger_than_its_model(tmp_path, bpe):
    from agents.agent import Agent
    from layers import LevelsConfig

    model = build_model(ModelConfig(vocab_size=256, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64))
    model.save_pretrained(tmp_path)
    bpe.hf.save_pretrained(tmp_path)
    cfg = WorkloadConfig(kind="synthetic", topology={"d": {"t": ["a"]}}, seq_len=16, eval_windows=2)
    with pytest.raises(ValueError, match="300 tokens but the model's embedding has 256 rows"):
        Agent(agent_specs(cfg)[0], model=ModelConfig(name_or_path=str(tmp_path)),
              levels=LevelsConfig(rank=4), workload=cfg)
