from pathlib import Path

import pytest

from swarm.config import ConfigError, SwarmConfig, config_dir, load_config
from swarm.config.load import group_options, groups

CONFIGS = config_dir()
PRIMARY = sorted([p.stem for p in CONFIGS.glob("*.yaml")] +
                 [f"experiment/{p.stem}" for p in (CONFIGS / "experiment").glob("*.yaml")])
GROUP_FILES = sorted((g, o) for g in groups() for o in group_options(g))


def test_configs_are_found():
    assert "demo" in PRIMARY
    assert {"model", "levels"} <= set(groups())


@pytest.mark.parametrize("name", PRIMARY)
def test_every_primary_config_loads(name):
    cfg = load_config(name)
    assert isinstance(cfg, SwarmConfig)


@pytest.mark.parametrize("group, option", GROUP_FILES)
def test_every_group_option_loads(group, option):
    cfg = load_config(None, [f"{group}={option}"])
    assert getattr(cfg, group) is not None


def test_every_shipped_yaml_is_covered():
    shipped = {p.relative_to(CONFIGS).with_suffix("").as_posix() for p in CONFIGS.rglob("*.yaml")}
    covered = set(PRIMARY) | {f"{g}/{o}" for g, o in GROUP_FILES}
    assert shipped == covered, f"YAML outside the primary/group layout: {shipped - covered}"


def test_every_config_header_shows_its_command():
    for path in CONFIGS.rglob("*.yaml"):
        first = path.read_text().splitlines()[0]
        assert first.startswith("#"), f"{path} has no comment header"
        assert "swarm " in path.read_text().split("\n\n")[0], f"{path}: header shows no swarm command"


def test_overrides_and_group_selection():
    cfg = load_config("demo", ["levels.rank=16", "model=tiny_gpt2", "demo.packages=[json]", "levels.scale=0.5"])
    assert cfg.levels.rank == 16 and cfg.levels.scale == 0.5
    assert cfg.model.arch == "gpt2" and cfg.demo.packages == ["json"]


@pytest.mark.parametrize("option", group_options("merge"))
def test_every_merge_option_builds_its_aggregator(option):
    from layers.merge import build_aggregator

    cfg = load_config(None, [f"merge={option}"])
    assert build_aggregator(cfg.merge).name == cfg.merge.aggregator


def test_yaml_path_is_accepted(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("defaults:\n  - model: tiny_gpt2\nlevels:\n  rank: 12\n")
    cfg = load_config(str(path))
    assert cfg.model.arch == "gpt2" and cfg.levels.rank == 12


@pytest.mark.parametrize(
    "overrides, pattern",
    [
        (["levels.rnak=3"], r"command line: key 'levels\.rnak': Key 'rnak' not in 'LevelsConfig'"),
        (["levels.rank=abc"], r"command line: key 'levels\.rank': Value 'abc' .* could not be converted to Integer"),
        (["demo.steps=1.5"], r"key 'demo\.steps'"),
        (["levels.rank=0"], r"levels\.rank: must be >= 1"),
        (["levels.names=[a,a]"], r"levels\.names: duplicate"),
        (["levels.dtype=float8"], r"levels\.dtype: 'float8' is not one of"),
        (["model.arch=rnn"], r"model\.arch: 'rnn' is not one of"),
        (["dynamics.phase.theta_off=0.9"], r"dynamics\.phase\.theta_off: invalid value"),
        (["merge.aggregator=avg"], r"merge\.aggregator: 'avg' is not one of"),
        (["merge.resonance.tau_max=1.5"], r"merge\.resonance\.tau_max: invalid value"),
        (["model=nope"], r"config group 'model': .*nope\.yaml not found \(options: \["),
        (["rank"], r"override 'rank' must look like key=value"),
    ],
)
def test_bad_overrides_name_the_key(overrides, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config("demo", overrides)


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("levels:\n  rnak: 4\n", r"bad\.yaml: key 'levels\.rnak'"),
        ("model:\n  hidden_size: wide\n", r"bad\.yaml: key 'model\.hidden_size'"),
        ("unknown_section: {}\n", r"bad\.yaml: key 'unknown_section'"),
        ("levels: [1, 2\n", r"bad\.yaml: not valid YAML"),
        ("- just\n- a list\n", r"bad\.yaml: the top level must be a mapping"),
        ("defaults:\n  - nosuchgroup: x\n", r"'nosuchgroup' is not a config group"),
    ],
)
def test_bad_files_name_the_file_and_key(tmp_path, text, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config(_write(tmp_path / "bad.yaml", text))


def test_bad_group_file_names_it(tmp_path, monkeypatch):
    for sub in ("model", "levels"):
        (tmp_path / sub).mkdir()
    (tmp_path / "main.yaml").write_text("# swarm demo\ndefaults:\n  - levels: odd\n")
    (tmp_path / "levels" / "odd.yaml").write_text("rank: many\n")
    monkeypatch.setenv("SWARM_CONFIG_DIR", str(tmp_path))
    with pytest.raises(ConfigError, match=r"levels/odd\.yaml: key 'levels\.rank'"):
        load_config("main")


def test_missing_config_names_it():
    with pytest.raises(ConfigError, match=r"config 'no_such_config' not found.*available: \["):
        load_config("no_such_config")


def test_a_topology_from_the_command_line_replaces_the_configured_one():
    cfg = load_config("swarm", ["workload.topology={d: {t: [json, email]}}"])
    assert cfg.workload.teams == {"d": {"t": ["json", "email"]}}
