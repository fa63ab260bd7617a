"""`swarm absorb` against a stopped run's level stores: skill transfer, the guard, refusals, grouping."""

import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from agents.config import ModelConfig
from agents.model import build_model
from cluster.topology import Topology
from layers import LevelStack
from layers.eval import model_bits_per_byte
from swarm.absorb.command import StoreLevels, absorb
from swarm.cli import main
from swarm.config import load_config, to_yaml

SMALL = ["workload=synthetic", "model.hidden_size=64", "model.num_layers=2", "model.intermediate_size=128",
         "model.num_heads=4", "levels.rank=32", "workload.seq_len=32", "workload.eval_windows=4"]
TASK = torch.tensor(list(b"swarm absorbs: 0123456789 abcdefghij! " * 40))


def task_windows(n=8, t=32):
    return torch.stack([TASK[i * 7:i * 7 + t + 1] for i in range(n)])


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A briefly pre-trained base: a random one is near-uniform whatever its levels hold, so nothing could
    harm it (and nothing should be learned on one)."""
    from swarm.tools.pretrain import pretrain_base

    cache = tmp_path_factory.mktemp("base")
    cfg = load_config("swarm", [*SMALL, "pretrain.steps=80", "pretrain.seq_len=64", "pretrain.eval_windows=4",
                                "pretrain.vocab_size=256", f"pretrain.cache_dir={cache}"])  # TASK is bytes
    return str(pretrain_base(cfg, progress=False, echo=lambda *_: None))


def make_run(root: Path, base: str) -> Path:
    cfg = load_config("swarm", [*SMALL, f"model.name_or_path={base}"])
    run = root / "run"
    run.mkdir()
    (run / "config.yaml").write_text(to_yaml(cfg))
    (run / "status.json").write_text(json.dumps({"state": "finished"}))
    levels = StoreLevels(run, cfg, Topology(cfg.workload, cfg.levels.names[2:]))
    for core in levels.servers.values():
        core.checkpoint()
    return run


ALL = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head")


def train_adapter(out: Path, model_cfg: ModelConfig, steps=60, targets=ALL[:-1]):
    """A PEFT LoRA adapter trained on TASK; lm_head is one module the level stack does not adapt."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = get_peft_model(build_model(model_cfg), LoraConfig(r=4, lora_alpha=8, target_modules=list(targets)))
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    w = task_windows()
    for _ in range(steps):
        loss = F.cross_entropy(model(w[:, :-1]).logits.flatten(0, 1), w[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.save_pretrained(out, save_embedding_layers=False)
    return out


def task_bpb(run: Path, level: str = "domain") -> float:
    cfg = load_config(run / "config.yaml")
    levels = StoreLevels(run, cfg, Topology(cfg.workload, cfg.levels.names[2:]))
    model = build_model(cfg.model)
    stack = LevelStack.attach(model, cfg.levels)
    for name in ("domain/toy", "foundation"):
        stack.load_level_state(name.split("/")[0], levels.level(name)[1])
    return model_bits_per_byte(model, task_windows())


@pytest.fixture(scope="module")
def skill(tmp_path_factory, base):
    root = tmp_path_factory.mktemp("absorb")
    return train_adapter(root / "skill", load_config("swarm", [*SMALL, f"model.name_or_path={base}"]).model)


def test_an_absorbed_adapter_brings_its_skill_and_keeps_the_probe_set(tmp_path, skill, base):
    run = make_run(tmp_path, base)
    before = task_bpb(run)
    task_file = tmp_path / "task.txt"
    task_file.write_bytes(bytes(TASK.tolist()))
    report = absorb(run, [str(skill)], level="domain", overrides=["absorb.strength=0.5"], eval_file=str(task_file))
    assert report["outcome"] == "absorbed", report["why"]
    assert report["eval_file"]["bpb_after"] < report["eval_file"]["bpb_before"] - 0.1
    assert report["versions_before"] == {"domain/toy": 0, "foundation": 0}
    assert report["versions_after"] == {"domain/toy": 1}
    kept = report["adapters"][0]
    assert all(0.2 < f < 0.8 for f in kept["per_module"].values())  # a rank-32 read space of d_in 64: about half
    assert kept["unmatched"] == [] and len(kept["per_module"]) == 14
    assert max(report["degradation"].values()) <= report["max_degradation"]
    after = task_bpb(run)  # recovered from the store: journaled and checkpointed
    assert after < before - 0.1, (before, after)


def test_modules_the_stack_does_not_adapt_are_reported_and_count_as_lost(tmp_path, base):
    run = make_run(tmp_path, base)
    cfg = load_config(run / "config.yaml")
    with_head = train_adapter(tmp_path / "head", cfg.model, steps=2, targets=("q_proj", "lm_head"))
    report = absorb(run, [str(with_head)], level="domain", dry_run=True)
    kept = report["adapters"][0]
    assert kept["unmatched"] == ["lm_head"] and set(kept["per_module"]) == {
        f"model.layers.{i}.self_attn.q_proj" for i in range(2)}
    assert kept["energy_kept"] < min(kept["per_module"].values())


def test_a_harmful_adapter_is_rolled_back_and_the_level_is_exactly_as_before(tmp_path, skill, base, capsys):
    run = make_run(tmp_path, base)
    harmful = tmp_path / "harmful"
    shutil.copytree(skill, harmful)
    tensors = load_file(str(harmful / "adapter_model.safetensors"))
    g = torch.Generator().manual_seed(1)
    save_file({k: torch.randn(v.shape, generator=g) * 10 for k, v in tensors.items()},
              str(harmful / "adapter_model.safetensors"))
    cfg = load_config(run / "config.yaml")
    topo = Topology(cfg.workload, cfg.levels.names[2:])
    state = StoreLevels(run, cfg, topo).level("domain/toy")
    code = main(["absorb", str(harmful), "--level", "domain", "--run", str(run)])
    out = capsys.readouterr().out
    assert code == 1 and "rolled back" in out and "absorb.max_degradation" in out
    again = StoreLevels(run, cfg, topo).level("domain/toy")
    assert again[0] == state[0] and all(torch.equal(again[1][m], state[1][m]) for m in state[1])


def test_a_wrong_architecture_is_refused_naming_the_mismatch(tmp_path, base, capsys):
    run = make_run(tmp_path, base)
    other = load_config("swarm", [*SMALL, "model.hidden_size=32"]).model
    wrong = train_adapter(tmp_path / "wrong", other, steps=1, targets=("q_proj",))
    assert main(["absorb", str(wrong), "--level", "domain", "--run", str(run)]) == 2
    err = capsys.readouterr().err
    assert "q_proj" in err and "(32, 32)" in err and "wrong base architecture" in err


def test_dry_run_and_target_errors(tmp_path, skill, base, capsys):
    run = make_run(tmp_path, base)
    report = absorb(run, [str(skill)], level="domain", dry_run=True, overrides=["absorb.strength=0.5"])
    assert report["outcome"] == "dry run" and "versions_after" not in report
    assert task_bpb(run) == pytest.approx(task_bpb(run))
    assert main(["absorb", str(skill), "--level", "swarm", "--run", str(run)]) == 2
    assert "pick one with --server" in capsys.readouterr().err
    assert main(["absorb", str(skill), "--level", "agent", "--run", str(run)]) == 2
    assert "live inside the agents" in capsys.readouterr().err


def test_similar_adapters_merge_and_moderately_similar_ones_split(tmp_path, skill, base):
    run = make_run(tmp_path, base)
    report = absorb(run, [str(skill), str(skill)], server="swarm/red", dry_run=True)
    assert [g["kind"] for g in report["groups"]] == ["similar"] and report["changed"] == ["swarm/red"]
    variant = tmp_path / "variant"
    shutil.copytree(skill, variant)
    tensors = load_file(str(variant / "adapter_model.safetensors"))
    g = torch.Generator().manual_seed(2)
    save_file({k: v + (torch.randn(v.shape, generator=g) * v.std() * 1.2 if "lora_B" in k else 0) for k, v in
               tensors.items()}, str(variant / "adapter_model.safetensors"))
    report = absorb(run, [str(skill), str(variant)], server="swarm/red", overrides=["absorb.strength=0.25"])
    assert [g["kind"] for g in report["groups"]] == ["moderate"], report["groups"]
    assert report["changed"] == ["domain/toy", "swarm/red"] and report["outcome"] == "absorbed"
    assert report["versions_after"] == {"swarm/red": 1, "domain/toy": 1}


def test_a_live_swarm_absorbs_through_its_level_server_actor(tmp_path, skill, base, ray_session):
    import ray

    from cluster.actors import level_server
    from cluster.build import level_shapes, level_specs
    from swarm.config import config_hash
    from swarm.rundir import namespace_of

    run = make_run(tmp_path, base)
    (run / "status.json").write_text(json.dumps({"state": "running"}))
    cfg = load_config(run / "config.yaml")
    topo = Topology(cfg.workload, cfg.levels.names[2:])
    shapes, ns = level_shapes(cfg.model, cfg.levels), namespace_of(run)
    specs = level_specs(topo, server=cfg.server, merge=cfg.merge, dynamics=cfg.dynamics, circuits=cfg.circuits,
                        stores=lambda name: tmp_path / "live" / name, config_hash=config_hash(cfg))
    handles = {spec.name: level_server(spec, namespace=ns, shapes=shapes) for spec in specs}  # parents first
    try:
        report = absorb(run, [str(skill)], level="domain", overrides=["absorb.strength=0.5"])
        assert report["live"] and report["outcome"] == "absorbed" and report["versions_after"] == {"domain/toy": 1}
        status = ray.get(handles["domain/toy"].status.remote())
        assert status["version"] == 1 and status["stats"]["absorbed"] == 1
        assert StoreLevels(run, cfg, topo).level("domain/toy")[0] == 0  # the stopped-run stores were not touched
    finally:
        for h in handles.values():
            ray.kill(h)
