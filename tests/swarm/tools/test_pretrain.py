import pytest
import torch

from agents.model import ByteTokenizer, build_model
from layers import LevelStack
from swarm.api.model import tokenizer_for
from swarm.config import load_config
from swarm.tools.pretrain import MANIFEST, pretrain_base

TINY = ["workload=synthetic", "model.hidden_size=32", "model.intermediate_size=64", "model.num_layers=1",
        "model.num_heads=2", "levels.rank=8", "pretrain.packages=[json, csv]", "pretrain.steps=25",
        "pretrain.batch_size=4", "pretrain.seq_len=64", "pretrain.eval_windows=8", "pretrain.warmup=5"]


def test_pretraining_learns_caches_by_content_and_loads_as_a_base(tmp_path):
    cfg = load_config("swarm", [*TINY, f"pretrain.cache_dir={tmp_path}"])
    path = pretrain_base(cfg, progress=False, echo=lambda s: None)
    manifest = __import__("json").loads((path / MANIFEST).read_text())
    assert manifest["bpb_end"] < manifest["bpb_start"] - 0.5  # it learned bytes
    said = []
    assert pretrain_base(cfg, progress=False, echo=said.append) == path and "cached" in said[0]  # no retraining
    other = load_config("swarm", [*TINY, f"pretrain.cache_dir={tmp_path}", "pretrain.steps=26"])
    assert pretrain_base(other, progress=False, echo=lambda s: None) != path  # any change: a new key

    base_cfg = load_config("swarm", [*TINY, f"model.name_or_path={path}"])
    base = build_model(base_cfg.model)
    probe = torch.randint(0, 256, (2, 16))
    twice = build_model(base_cfg.model)
    with torch.no_grad():
        assert torch.equal(base(probe).logits, twice(probe).logits)
        random = build_model(cfg.model)(probe).logits
        assert not torch.equal(base(probe).logits, random)  # not the random init
    assert isinstance(tokenizer_for(base_cfg.model), ByteTokenizer)
    stack = LevelStack.attach(base, base_cfg.levels)  # agents adapt it like any HF model
    assert stack.module_names


def test_a_corpus_that_overlaps_an_agent_is_refused(tmp_path):
    cfg = load_config("swarm", [f"pretrain.cache_dir={tmp_path}", "pretrain.packages=[email.mime]"])
    with pytest.raises(ValueError, match="'email.mime' overlaps the agent 'email'"):
        pretrain_base(cfg, progress=False)
