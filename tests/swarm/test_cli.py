import json
import subprocess
import sys

import pytest

from swarm.cli import main


def test_config_show_prints_resolved_config(capsys):
    assert main(["config", "show", "demo", "levels.rank=24", "model=tiny_gpt2"]) == 0
    out = capsys.readouterr().out
    assert "rank: 24" in out and "arch: gpt2" in out and "defaults" not in out


def test_config_error_exits_2_with_message(capsys):
    assert main(["config", "show", "levels.rnak=1"]) == 2
    assert "config error" in capsys.readouterr().err


def test_console_script_entry_point():
    out = subprocess.run([sys.executable, "-m", "swarm", "config", "show"], capture_output=True, text=True, check=True)
    assert "names:" in out.stdout


def test_demo_learns_and_round_trips(tmp_path, capsys):
    """A short real demo: held-out bits/byte of the agent level drop below the base's."""
    code = main(["demo", "--quiet", "demo.steps=30", "demo.eval_every=15", "demo.steps_per_context=10",
                 "demo.packages=[json]", "demo.eval_windows=8", "model.num_layers=2", "levels.rank=16",
                 f"demo.out_dir={tmp_path}"])
    assert code == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    bpb = metrics["held_out_bpb"]
    assert bpb["agent"] < bpb["base"] - 0.5
    assert metrics["peft_roundtrip_max_abs_logit_diff"] < 1e-5
    assert metrics["growth_max_abs_logit_diff"] < 1e-5 and metrics["rank"] == 24
    assert (tmp_path / "adapter_agent" / "adapter_model.safetensors").is_file()


def test_overrides_may_follow_the_options():
    from swarm.cli_args import parse

    args = parse(["run", "swarm", "--quiet", "--serve", "run.steps=5", "serve.address=127.0.0.1:0"])
    assert args.quiet and args.serve and args.args == ["swarm", "run.steps=5", "serve.address=127.0.0.1:0"]
    assert parse(["absorb", "a", "--level", "domain", "absorb.strength=0.5"]).adapters == ["a", "absorb.strength=0.5"]
    with pytest.raises(SystemExit):
        parse(["run", "--quiet", "--bogus"])


def test_experiment_help_states_the_plans_it_runs(capsys):
    """The sizes `swarm experiment --help` quotes are those the plans have (so the help cannot drift)."""
    import re

    from swarm.config import load_config
    from swarm.experiment.jobs import plan

    with pytest.raises(SystemExit):
        main(["experiment", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    team = int(re.search(r"experiment/team\) is (\d+) jobs", text).group(1))
    ci = int(re.search(r"experiment/ci` is (\d+) jobs", text).group(1))
    assert team == len(plan(load_config("experiment/team"))) and ci == len(plan(load_config("experiment/ci")))
    assert "minutes" in text


@pytest.mark.parametrize("name", ["nope", "nope.yaml", "sub/nope.yml"])
def test_a_missing_config_is_named_once_with_every_known_config(name, capsys):
    assert main(["config", "show", name]) == 2
    err = capsys.readouterr().err
    assert ".yaml.yaml" not in err and ".yml.yaml" not in err and repr(name) in err
    assert "experiment/ci" in err and "experiment/team" in err and "swarm" in err


def test_a_config_name_may_carry_its_suffix(capsys):
    assert main(["config", "show", "experiment/ci.yaml"]) == 0
    assert "experiment:" in capsys.readouterr().out


def test_linger_needs_serve(capsys):
    assert main(["run", "--linger", "run.steps=1"]) == 2
    assert "--linger" in capsys.readouterr().err
