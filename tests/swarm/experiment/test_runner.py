"""The CI-sized experiment end to end: every scenario, real pre-trained (briefly) base, report + plots."""

import json
import math

import pytest
from rich.console import Console

from swarm.cli import main
from swarm.experiment.runner import run_experiment

pytestmark = pytest.mark.slow

SECTIONS = ["## Headroom check", "## Fraction of headroom captured", "## Targets", "## (a) Team learning",
            "### Ablations and baseline aggregators",
            "## (b) A new agent joins a trained team", "## (c) Context switches: forgetting",
            "## (d) Conflicting and adversarial agents", "## Timescales, promotions, screening",
            "## The seed's open questions", "### Which autocorrelation window works best",
            "### Where the phase thresholds should sit", "### When forgetting still occurs",
            "### How resonance affects specialisation"]


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    root = tmp_path_factory.mktemp("exp")
    overrides = [f"experiment.out_dir={root}", f"pretrain.cache_dir={root / 'base'}", "experiment.workers=2"]
    console = Console(record=True, width=200)
    run_dir = run_experiment("experiment/ci", overrides, console=console)
    return run_dir, overrides, console.export_text()


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def test_the_report_has_every_section_and_plot(experiment):
    run_dir, _, _ = experiment
    report = (run_dir / "report.md").read_text()
    for section in SECTIONS:
        assert section in report, section
    assert "Command: `swarm experiment experiment/ci" in report
    for png in ("team_bpb", "team_curves", "ablations", "join", "switch", "attack", "timescales", "screened"):
        assert (run_dir / f"{png}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"({png}.png)" in report
    targets = report.split("## Targets")[1].split("## Answers")[0]
    rows = [r for r in targets.splitlines() if r.startswith("| ") and not r.startswith("| target")]
    # the two headroom targets (capture, full vs fedavg), four more, the attack one for each of two attacks at 20%
    assert len(rows) == 7
    assert all(r.rstrip(" |").rsplit("| ", 1)[-1].startswith(("yes", "**no**", "not measurable")) for r in rows)


def test_every_arm_produced_finite_numbers(experiment):
    run_dir, _, _ = experiment
    jobs = [json.loads(p.read_text()) for p in (run_dir / "jobs").glob("*.json")]
    cfg = json.loads((run_dir / "experiment.json").read_text())["experiment"]
    assert {j["arm"] for j in jobs if j["id"].startswith("team/")} == set(cfg["arms"])
    assert not list((run_dir / "jobs").glob("*.error.txt"))
    for j in jobs:
        if j["kind"] == "attack":
            assert j["own"] and all(_finite(v) for v in j["own"].values())
            continue
        for rec in j["team"]["agents"].values():
            assert all(_finite(rec[k]) for k in ("own", "team", "others", "own_base", "team_local")), j["id"]
        assert all(_finite(v) for _, v in j["team"]["curve"])
        assert _finite(j["team"]["bytes_per_step"])
        for key in ("join", "switch"):
            if key in j:
                assert all(_finite(v) for _, v in j[key]["curve"]), (j["id"], key)


def test_a_second_run_resumes_and_a_changed_config_is_refused(experiment, capsys):
    run_dir, overrides, _ = experiment
    stamps = {p.name: p.stat().st_mtime_ns for p in (run_dir / "jobs").glob("*.json")}
    console = Console(record=True, width=200)
    run_experiment("experiment/ci", overrides, console=console)
    assert f"{len(stamps)} jobs ({len(stamps)} done already)" in console.export_text()
    assert stamps == {p.name: p.stat().st_mtime_ns for p in (run_dir / "jobs").glob("*.json")}
    assert main(["experiment", "experiment/ci", *overrides, "experiment.steps=21"]) == 1
    assert "holds an experiment with another config" in capsys.readouterr().err


def test_the_report_is_rebuilt_from_the_jobs(experiment):
    run_dir, _, _ = experiment
    before = (run_dir / "report.md").read_text()
    (run_dir / "report.md").unlink()
    assert main(["experiment", "--report", str(run_dir)]) == 0
    assert (run_dir / "report.md").read_text() == before


def test_a_bad_experiment_config_fails_before_any_work(tmp_path, capsys):
    assert main(["experiment", "experiment/ci", f"experiment.out_dir={tmp_path}", "experiment.arms=[nope]"]) == 2
    assert "unknown arm 'nope'" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


SWITCH = ("[transformers.utils,transformers.integrations,sympy.printing,sympy.matrices,"
          "ATen.cpu,ATen.cuda,ATen.functorch,c10.cuda]")


def test_a_code_experiments_joiner_and_switch_packages_are_read_in_their_languages_and_checked_first():
    """The join and switch scenarios on the code workload: the joiner reads its team's language, each switch
    package the language of the agent that moves to it; a package that is not installed, or a team that
    does not exist, is refused before any job runs (not after a team phase)."""
    from agents.sources.document import WorkloadError
    from swarm.config import load_config
    from swarm.experiment.runner import check_packages, code_agents

    scenarios = ["experiment.scenarios=[team,join,switch]", "experiment.join.team=sympy",
                 f"experiment.switch.packages={SWITCH}"]
    cfg = load_config("experiment/code", [*scenarios, "experiment.join.agent=sympy.solvers"])
    pairs = code_agents(cfg)
    assert {("python", "sympy.solvers"), ("cpp", "ATen.cpu"), ("python", "sympy.printing")} <= set(pairs)
    assert len(pairs) == 8 + 1 + 8
    check_packages(cfg)  # every file read, none in the pretraining corpus
    with pytest.raises(WorkloadError, match=r"agent 'sympy.nothing' \(domain python\): no directory"):
        check_packages(load_config("experiment/code", [*scenarios, "experiment.join.agent=sympy.nothing"]))
    with pytest.raises(ValueError, match=r"experiment.join.team: 'net' is not a team of the workload \(aten, c10, "):
        code_agents(load_config("experiment/code", ["experiment.scenarios=[team,join]"]))
