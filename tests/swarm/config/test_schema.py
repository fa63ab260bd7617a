"""``run.steps``: a positive count, or null for a run without an end."""

import pytest

from swarm.config import ConfigError, load_config, to_yaml


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
