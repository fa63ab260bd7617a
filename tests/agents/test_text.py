"""The tokenizer-general text path: byte counts, windows, and bits per byte whatever the tokenizer."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.config import ModelConfig, WorkloadConfig
from agents.model import build_model
from agents.sources import package_files
from agents.text import ByteTokenizer, HFTokenizer, Windows, eval_windows, load_tokenizer, sample_windows
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


def test_byte_tokenizer_keeps_the_figure_of_the_byte_path():
    """On the byte tokenizer, an agent's held-out windows are exactly the raw bytes of its held-out
    files (as before the text path), so its bits per byte is the same number."""
    cfg = WorkloadConfig(kind="stdlib", topology={"d": {"t": ["json"]}}, seq_len=32, eval_windows=6)
    held = Workload(cfg, agent_specs(cfg)[0]).held_out
    files = package_files("json")[cfg.held_out_every - 1::cfg.held_out_every]
    expected = []
    for f in files:
        data = torch.tensor(list(f.read_bytes()))
        n = min(max(1, 6 // len(files)), (data.numel() - 1) // 32)
        expected += [data[i * 32:i * 32 + 33] for i in range(n)]
    assert torch.equal(held.ids, torch.stack(expected[:6])) and bool((held.target_bytes == 1).all())
    model = build_model(ModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64))
    assert held.bits_per_byte(model) == model_bits_per_byte(model, torch.stack(expected[:6]))


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
        for doc in docs:
            for i in range((len(doc) - 1) // T):
                ids = doc.ids[i * T:i * T + T + 1]
                logp = torch.log_softmax(model(ids[None, :-1]).logits[0].double(), -1)  # (T, V)
                for t in range(T):
                    bits -= float(logp[t, ids[t + 1]]) / math.log(2)
                    nbytes += int(doc.nbytes[i * T + t + 1])
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
