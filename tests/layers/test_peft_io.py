import json
import warnings

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file

from layers import LevelsConfig, LevelStack
from tests.conftest import make_tiny, randomize


def _peft_load(family, directory):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return PeftModel.from_pretrained(make_tiny(family), str(directory)).eval()


@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox"])
@pytest.mark.parametrize("level", ["context", "foundation"])
def test_export_loads_in_peft_with_same_logits(family, level, tokens, tmp_path):
    model = make_tiny(family)
    stack = LevelStack.attach(model, LevelsConfig(rank=8, scale=0.5))
    randomize(stack, std=0.1)
    directory = stack.export_peft(level, tmp_path / level)
    config = json.loads((directory / "adapter_config.json").read_text())
    assert config["r"] == 8 and config["lora_alpha"] == 4 and config["peft_type"] == "LORA"
    assert config["fan_in_fan_out"] is (family == "gpt2")
    keys = load_file(str(directory / "adapter_model.safetensors"))
    assert len(keys) == 2 * len(stack.module_names)
    stack.set_enabled([level])
    with torch.no_grad():
        ours = model(tokens).logits
        theirs = _peft_load(family, directory)(tokens).logits
    assert float((ours - theirs).abs().max()) < 1e-5


def test_export_of_a_module_subset_uses_full_names(tmp_path, tokens):
    """Only layer 1's q_proj adapted: PEFT must not adapt layer 0's q_proj on load."""
    model = make_tiny("llama")
    stack = LevelStack.attach(model, LevelsConfig(rank=4, target_modules=["re:.*layers\\.1\\.self_attn\\.q_proj"]))
    randomize(stack)
    directory = stack.export_peft("agent", tmp_path / "a")
    assert json.loads((directory / "adapter_config.json").read_text())["target_modules"] == [
        "model.layers.1.self_attn.q_proj"
    ]
    stack.set_enabled(["agent"])
    with torch.no_grad():
        assert float((model(tokens).logits - _peft_load("llama", directory)(tokens).logits).abs().max()) < 1e-5


def test_export_then_import_is_exact(tmp_path):
    stack = LevelStack.attach(make_tiny("llama"), LevelsConfig(rank=8, scale=2.0))
    randomize(stack)
    stack.export_peft("agent", tmp_path / "agent")
    stack.reset_level("swarm")
    report = stack.import_peft("swarm", tmp_path / "agent", strength=1.0)
    assert float(report) == pytest.approx(1.0, abs=1e-6) and not report.unmatched  # P stored in float32
    for name, value in stack.level_state("swarm").items():
        torch.testing.assert_close(value, stack.level_state("agent")[name], rtol=1e-5, atol=1e-7)


def _trained_peft_adapter(family, directory, *, r, alpha, use_rslora=False, seed=5,
                          targets=("q_proj", "v_proj", "down_proj")):
    torch.manual_seed(seed)
    peft_model = get_peft_model(make_tiny(family), LoraConfig(r=r, lora_alpha=alpha, use_rslora=use_rslora,
                                                              target_modules=list(targets)))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    peft_model.save_pretrained(str(directory))
    return peft_model.eval()


@pytest.mark.parametrize("r, alpha, rslora", [(4, 8, False), (16, 7, True)])
def test_import_projects_any_peft_adapter(tmp_path, tokens, r, alpha, rslora):
    source = _trained_peft_adapter("llama", tmp_path / "src", r=r, alpha=alpha, use_rslora=rslora,
                                   targets=("q_proj", "v_proj", "o_proj", "up_proj"))
    # Full rank (R = d_in = 64 for these modules): the read space is everything, so the import is lossless.
    model = make_tiny("llama")
    stack = LevelStack.attach(model, LevelsConfig(rank=64, scale=0.25))
    report = stack.import_peft("domain", tmp_path / "src")
    assert float(report) == pytest.approx(1.0, abs=1e-6)
    assert len(report.per_module) == 8 and not report.unmatched
    stack.set_enabled(["domain"])
    with torch.no_grad():
        torch.testing.assert_close(model(tokens).logits, source(tokens).logits, rtol=1e-4, atol=1e-4)


def test_import_energy_matches_projection_and_strength(tmp_path):
    _trained_peft_adapter("llama", tmp_path / "src", r=4, alpha=8)
    stack = LevelStack.attach(make_tiny("llama"), LevelsConfig(rank=16, scale=1.0))
    report = stack.import_peft("agent", tmp_path / "src", strength=0.5)
    tensors = load_file(str(tmp_path / "src" / "adapter_model.safetensors"))
    kept = total = 0.0
    for name, module in stack.modules.items():
        key = f"base_model.model.{name}"
        if f"{key}.lora_A.weight" not in tensors:
            assert float(module.B["agent"].detach().abs().sum()) == 0
            continue
        delta = 2.0 * tensors[f"{key}.lora_B.weight"].double() @ tensors[f"{key}.lora_A.weight"].double()
        projected = delta @ module.P.double().T @ module.P.double()  # onto the read space
        torch.testing.assert_close(module.get_delta_weight("agent").double(), 0.5 * projected, rtol=1e-5, atol=1e-7)
        kept += float(projected.pow(2).sum())
        total += float(delta.pow(2).sum())
    assert 0 < float(report) < 1
    assert float(report) == pytest.approx(kept / total, rel=1e-6)


def test_import_reports_unmatched_modules(tmp_path):
    _trained_peft_adapter("llama", tmp_path / "src", r=4, alpha=8)
    stack = LevelStack.attach(make_tiny("llama"), LevelsConfig(rank=8, target_modules=["q_proj"]))
    report = stack.import_peft("agent", tmp_path / "src")
    assert sorted(report.unmatched) == sorted(
        f"model.layers.{i}.{m}" for i in range(2) for m in ("self_attn.v_proj", "mlp.down_proj")
    )
    assert set(report.per_module) == {f"model.layers.{i}.self_attn.q_proj" for i in range(2)}
    assert float(report) < max(report.per_module.values())


def test_import_refuses_wrong_architecture_and_changes_nothing(tmp_path):
    _trained_peft_adapter("llama", tmp_path / "src", r=4, alpha=8)
    tensors = load_file(str(tmp_path / "src" / "adapter_model.safetensors"))
    key = sorted(k for k in tensors if "down_proj.lora_A" in k)[-1]
    tensors[key] = torch.zeros(4, 50)  # down_proj reads 96 features in this model
    save_file(tensors, str(tmp_path / "src" / "adapter_model.safetensors"))
    stack = LevelStack.attach(make_tiny("llama"), LevelsConfig(rank=8))
    with pytest.raises(ValueError, match="mlp.down_proj.*wrong base architecture"):
        stack.import_peft("agent", tmp_path / "src")
    assert all(float(v.abs().sum()) == 0 for v in stack.level_state("agent").values())


def test_import_rejects_bad_files(tmp_path):
    stack = LevelStack.attach(make_tiny("llama"), LevelsConfig(rank=8))
    with pytest.raises(ValueError, match="adapter_config.json not found"):
        stack.import_peft("agent", tmp_path)
    _trained_peft_adapter("llama", tmp_path / "src", r=4, alpha=8)
    config_path = tmp_path / "src" / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "use_dora": True}))
    with pytest.raises(ValueError, match="DoRA"):
        stack.import_peft("agent", tmp_path / "src")
    with pytest.raises(ValueError, match="finite"):
        stack.import_peft("agent", tmp_path / "src", strength=float("nan"))
