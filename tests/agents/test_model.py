import pytest
import torch

from agents.config import ModelConfig
from agents.model import build_model
from agents.text import ByteTokenizer


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gpt_neox"])
def test_build_from_config_is_deterministic(arch):
    cfg = ModelConfig(arch=arch, hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128)
    a, b = build_model(cfg), build_model(cfg)
    assert a.config.vocab_size == 256 and not a.training
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name


def test_default_tiny_llama_size():
    n = sum(p.numel() for p in build_model(ModelConfig()).parameters())
    assert 1_000_000 < n < 10_000_000


def test_local_checkpoint_loads(tmp_path):
    cfg = ModelConfig(hidden_size=64, num_layers=1, num_heads=4, intermediate_size=96)
    model = build_model(cfg)
    model.save_pretrained(tmp_path)
    loaded = build_model(ModelConfig(name_or_path=str(tmp_path)))
    x = torch.randint(0, 256, (1, 8))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).logits, model(x).logits)


def test_remote_name_is_refused():
    with pytest.raises(ValueError, match="not a local directory"):
        build_model(ModelConfig(name_or_path="meta-llama/Llama-3-8B"))


def test_bad_shape_is_rejected():
    with pytest.raises(ValueError, match="divisible by model.num_heads"):
        ModelConfig(hidden_size=66, num_heads=4)


def test_byte_tokenizer_round_trip():
    tok = ByteTokenizer()
    text = "def f(x):\n    return 'é'\n"
    ids = tok.encode(text)
    assert max(ids) < 256 and tok.decode(ids) == text


def test_windows_longer_than_the_position_limit_are_refused(tmp_path):
    from agents.model import check_seq_len

    check_seq_len(ModelConfig(max_positions=64), 64)
    with pytest.raises(ValueError, match="workload.seq_len=65 exceeds the position limit 64 of model.max_positions"):
        check_seq_len(ModelConfig(max_positions=64), 65)
    build_model(ModelConfig(arch="gpt2", hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                            max_positions=48)).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=f"exceeds the position limit 48 of {tmp_path}"):
        check_seq_len(ModelConfig(name_or_path=str(tmp_path)), 100)
