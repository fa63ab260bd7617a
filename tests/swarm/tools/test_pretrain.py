import json

import pytest
import torch

from agents.model import build_model
from agents.text import ByteTokenizer, HFTokenizer, load_tokenizer
from layers import LevelStack
from swarm.config import load_config
from swarm.tools.pretrain import MANIFEST, pretrain_base, with_pretrained_base

TINY = ["workload=synthetic", "model.hidden_size=32", "model.intermediate_size=64", "model.num_layers=1",
        "model.num_heads=2", "levels.rank=8", "pretrain.packages=[json, csv]", "pretrain.steps=25",
        "pretrain.batch_size=4", "pretrain.seq_len=64", "pretrain.eval_windows=8", "pretrain.warmup=5",
        "pretrain.vocab_size=400"]


def test_pretraining_learns_caches_by_content_and_loads_without_project_code(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = load_config("swarm", [*TINY, f"pretrain.cache_dir={tmp_path}"])
    path = pretrain_base(cfg, progress=False, echo=lambda s: None)
    manifest = json.loads((path / MANIFEST).read_text())
    assert manifest["bpb_end"] < manifest["bpb_start"] - 0.2  # it learned (25 steps)
    assert manifest["model"]["vocab_size"] == 400 and manifest["train_tokens"] < manifest["train_bytes"]
    said = []
    assert pretrain_base(cfg, progress=False, echo=said.append) == path and "cached" in said[0]  # no retraining
    other = load_config("swarm", [*TINY, f"pretrain.cache_dir={tmp_path}", "pretrain.steps=26"])
    assert pretrain_base(other, progress=False, echo=lambda s: None) != path  # any change: a new key

    plain_model = AutoModelForCausalLM.from_pretrained(path)  # a standard HF checkpoint
    plain_tok = AutoTokenizer.from_pretrained(path)
    text = "def loads(s):\n    return decode(s)  # é\n"
    ids = plain_tok(text, return_tensors="pt").input_ids  # (1, T)
    assert plain_tok.decode(ids[0]) == text and len(plain_tok) == 400

    base_cfg = load_config("swarm", [*TINY, f"model.name_or_path={path}"])
    base = build_model(base_cfg.model)
    tokenizer = load_tokenizer(base_cfg.model)
    assert isinstance(tokenizer, HFTokenizer) and tokenizer.encode(text) == ids[0].tolist()
    with torch.no_grad():
        assert torch.equal(base(ids).logits, plain_model(ids).logits)
        random = build_model(cfg.model.__class__(**{**cfg.model.__dict__, "vocab_size": 400}))(ids).logits
        assert not torch.equal(base(ids).logits, random)  # not the random init
    stack = LevelStack.attach(base, base_cfg.levels)  # agents adapt it like any HF model
    assert stack.module_names


def test_vocab_256_keeps_a_byte_level_base(tmp_path):
    cfg = load_config("swarm", [*TINY, "pretrain.vocab_size=256", "pretrain.steps=5", f"pretrain.cache_dir={tmp_path}"])
    path = pretrain_base(cfg, progress=False, echo=lambda s: None)
    assert not (path / "tokenizer.json").exists()
    assert isinstance(load_tokenizer(load_config("swarm", [*TINY, f"model.name_or_path={path}"]).model), ByteTokenizer)


def test_the_default_run_resolves_the_pretrained_base_like_a_local_checkpoint(tmp_path):
    overrides = [*TINY, "pretrain.steps=3", f"pretrain.cache_dir={tmp_path}"]
    off = load_config("swarm", [*overrides, "pretrain.enabled=false"])
    assert with_pretrained_base(off, None, ["x=1"]) == (off, ["x=1"])  # disabled: unchanged
    on = load_config("swarm", [*overrides, "pretrain.enabled=true"])
    cfg, extra = with_pretrained_base(on, lambda o: load_config("swarm", o), [*overrides, "pretrain.enabled=true"],
                                      progress=False, echo=lambda s: None)
    assert extra[-1].startswith("model.name_or_path=") and cfg.model.name_or_path == extra[-1].split("=", 1)[1]
    assert (tmp_path / cfg.model.name_or_path.rsplit("/", 1)[-1] / MANIFEST).is_file()


def test_a_corpus_that_overlaps_an_agent_is_refused(tmp_path):
    cfg = load_config("swarm", [f"pretrain.cache_dir={tmp_path}", "pretrain.packages=[email.mime]"])
    with pytest.raises(ValueError, match="'email.mime' overlaps the agent 'email'"):
        pretrain_base(cfg, progress=False)
