"""`swarm absorb absorb.grow=N`: grow the read space by the adapter's directions, then absorb (keeps it)."""

import pytest

from agents.model import build_model
from cluster.topology import Topology
from layers import LevelStack
from layers.eval import model_bits_per_byte
from layers.peft_io import read_adapter
from swarm.absorb.command import StoreLevels, absorb
from swarm.cli import main
from swarm.config import load_config
from tests.swarm.absorb.test_command import ALL, SMALL, make_run, task_windows, train_adapter


def stack_of(run):
    """A local model with the run's domain and foundation levels as stored, at the run's rank (grown or not)."""
    cfg = load_config(run / "config.yaml")
    levels = StoreLevels(run, cfg, Topology(cfg.workload, cfg.levels.names[2:]))
    stack = LevelStack.attach(build_model(cfg.model), cfg.levels)
    for event in levels.growths("domain/toy"):
        stack.apply_growth(event)
    for name in ("domain/toy", "foundation"):
        stack.load_level_state(name.split("/")[0], levels.level(name)[1])
    return stack


def task_bpb(run):
    stack = stack_of(run)
    return model_bits_per_byte(stack.model, task_windows())


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A briefly pre-trained base (as in test_command)."""
    from swarm.tools.pretrain import pretrain_base

    cache = tmp_path_factory.mktemp("base")
    cfg = load_config("swarm", [*SMALL, "pretrain.steps=80", "pretrain.seq_len=64", "pretrain.eval_windows=4",
                                "pretrain.vocab_size=256", f"pretrain.cache_dir={cache}"])
    return str(pretrain_base(cfg, progress=False, echo=lambda *_: None))


@pytest.fixture(scope="module")
def skill(tmp_path_factory, base):
    cfg = load_config("swarm", [*SMALL, f"model.name_or_path={base}"])
    return train_adapter(tmp_path_factory.mktemp("adapter") / "task", cfg.model, targets=ALL[:-1])


def test_growth_keeps_an_adapter_that_fits_and_brings_more_of_its_skill(tmp_path, skill, base):
    (tmp_path / "plain").mkdir()
    (tmp_path / "grown").mkdir()
    plain = make_run(tmp_path / "plain", base)
    grown = make_run(tmp_path / "grown", base)
    start = task_bpb(plain)
    without = absorb(plain, [str(skill)], level="domain", overrides=["absorb.max_degradation=1"])
    rank = load_config(plain / "config.yaml").levels.rank
    adapter_rank = max(a.shape[0] for a, _ in read_adapter(skill)[1].values())
    report = absorb(grown, [str(skill)], level="domain", overrides=["absorb.max_degradation=1",
                                                                     f"absorb.grow={adapter_rank}"])
    assert without["outcome"] == report["outcome"] == "absorbed"
    a, b = without["adapters"][0], report["adapters"][0]
    assert b["energy_kept_without_growth"] == pytest.approx(a["energy_kept"])  # the same figure, side by side
    assert a["energy_kept"] < 0.6 and b["energy_kept"] >= 0.9  # the adapter's rank fits in the added rows
    assert report["growth"]["to_rank"] == rank + adapter_rank
    assert task_bpb(grown) < task_bpb(plain) < start  # more of the adapter kept: more of its skill
    # every server journaled the growth; a restart replays it, and P is the same in every process
    cfg = load_config(grown / "config.yaml")
    levels = StoreLevels(grown, cfg, Topology(cfg.workload, cfg.levels.names[2:]))
    assert all(core.rank == rank + adapter_rank for core in levels.servers.values())
    stacks = [stack_of(grown) for _ in range(2)]
    assert stacks[0].projection_digest() == stacks[1].projection_digest()


def test_a_rolled_back_grow_changes_nothing(tmp_path, skill, base, capsys):
    run = make_run(tmp_path, base)
    code = main(["absorb", str(skill), "--level", "domain", "--run", str(run), "absorb.grow=4",
                 "absorb.strength=50"])  # far too strong: the probe set suffers, rolled back
    assert code == 1
    assert "kept without growth" in capsys.readouterr().out
    cfg = load_config(run / "config.yaml")
    levels = StoreLevels(run, cfg, Topology(cfg.workload, cfg.levels.names[2:]))
    assert all(core.rank == cfg.levels.rank and not core.growths for core in levels.servers.values())
    for core in levels.servers.values():
        assert all(float(t.abs().sum()) == 0 for t in core.B.values())


def test_bad_grow_value_is_refused(tmp_path, skill, base, capsys):
    run = make_run(tmp_path, base)
    assert main(["absorb", str(skill), "--level", "domain", "--run", str(run), "absorb.grow=lots"]) == 2
    assert "absorb.grow" in capsys.readouterr().err
