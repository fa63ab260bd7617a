"""``run.steps``: a positive count, or null for a run without an end."""

import pytest

from swarm.config import ConfigError, check_growth, load_config, to_yaml
from swarm.run.command import run_swarm


def test_run_steps_null_means_no_end_and_survives_the_yaml_round_trip(tmp_path):
    cfg = load_config("swarm", ["run.steps=null"])
    assert cfg.run.steps is None
    path = tmp_path / "config.yaml"
    path.write_text(to_yaml(cfg))
    assert "steps: null" in path.read_text() and load_config(path).run.steps is None
    assert load_config(path, ["run.steps=50"]).run.steps == 50  # a resume may give it an end


@pytest.mark.parametrize("overrides, key", [(["run.steps=0"], "run.steps"), (["run.steps=-3"], "run.steps"),
                                            (["run.steps=null", "run.chunk=0"], "run.chunk")])
def test_other_step_counts_and_the_other_fields_are_still_checked(overrides, key):
    with pytest.raises(ConfigError, match=key):
        load_config("swarm", overrides)


GROWTH = ["levels.rank=4", "levels.max_rank=16", "levels.grow_after=3"]


@pytest.mark.parametrize("overrides,names", [
    (["server.step=adam"], "dynamics.temperature.measure=gradient"),
    (["server.step=rms", "dynamics.temperature.enabled=false"], "dynamics.temperature.enabled"),
])
def test_automatic_growth_that_could_never_fire_is_refused_with_the_setting_that_fixes_it(overrides, names, tmp_path):
    cfg = load_config("swarm", [*GROWTH, *overrides, f"run.out_dir={tmp_path}"])  # loads: an older run resumes
    with pytest.raises(ValueError, match=f"levels.grow_after: .*{names}"):
        check_growth(cfg)
    with pytest.raises(ValueError, match=f"levels.grow_after: .*{names}"):  # a new run is refused before it starts
        run_swarm(cfg, progress=False)
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize("overrides", [["server.step=adam", "dynamics.temperature.measure=gradient"],
                                       ["server.step=rms"], ["server.step=adam", "levels.grow_after=0"]])
def test_growth_settings_that_can_fire_or_are_off_load(overrides):
    cfg = load_config("swarm", [*GROWTH, *overrides])
    check_growth(cfg)
    assert cfg.levels.max_rank == 16
