"""``swarm run`` end to end on the session's Ray: run directory, summary, resume, status."""

import io
import json
import re

import pytest
from rich.console import Console

from swarm.cli import main
from swarm.config import ConfigError, load_config
from swarm.run.command import run_swarm
from tests.cluster.test_runtime import OVERRIDES


def agent_records(run_dir):
    return [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "agent"]


def test_run_writes_its_directory_and_resume_continues_from_the_checkpoints(ray_session, tmp_path, capsys):
    # eval_every 4 does not divide 10: the held-out figure at the end comes from the final evaluation
    cfg = load_config("swarm", [*OVERRIDES, "run.steps=10", "run.eval_every=4", f"run.out_dir={tmp_path}",
                                "run.name=r"])
    out = io.StringIO()
    summary = run_swarm(cfg, console=Console(file=out, width=200))  # not a terminal: plain progress lines
    run_dir = tmp_path / "r"
    printed = out.getvalue()
    for phase in ("starting 4 level servers", "building 4 agents", "4 agents ready; held-out bpb"):
        assert phase in printed, printed
    assert re.search(r"\] steps 40/40, train bpb \d\.\d{3}, held-out bpb \d\.\d{3} @10;", printed), printed
    assert {(r["step"], r["eval_step"]) for r in agent_records(run_dir)} == {(5, 4), (10, 10)}
    status = json.loads((run_dir / "status.json").read_text())
    for a in summary["agents"]:  # the summary reports the figure status.json shows, measured at the end
        assert status["agents"][a["agent"]]["eval_step"] == 10
        assert a["bpb_end"] == status["agents"][a["agent"]]["eval_bpb"]
    md = (run_dir / "summary.md").read_text()
    assert "summary.md" not in md and "not the value of sharing" in md  # pretrain.enabled=false: random base
    for name in ("config.yaml", "metrics.jsonl", "status.json", "summary.json", "summary.md"):
        assert (run_dir / name).is_file(), name
    assert summary["state"] == "finished" and len(summary["agents"]) == 4
    assert all(a["steps"] == 10 and a["bpb_end"] < a["bpb_start"] for a in summary["agents"])
    for a in summary["agents"]:  # transfer to teammates' and other teams' held-out files, base vs learned
        assert a["bpb_team_base"] > a["bpb_team"] and a["team_gain"] == a["bpb_team_base"] - a["bpb_team"]
        assert a["others_gain"] is not None
    assert "Held-out bits per byte went from" in out.getvalue()
    kinds = {json.loads(line)["kind"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()}
    assert kinds == {"agent", "server"}
    with pytest.raises(FileExistsError, match="--resume"):
        run_swarm(cfg, progress=False, console=Console(file=io.StringIO()))

    with pytest.raises(ConfigError, match="levels.rank would change what the run learned"):
        run_swarm(resume=run_dir, overrides=["levels.rank=4"], progress=False, console=Console(file=io.StringIO()))
    resumed = run_swarm(resume=run_dir, overrides=["run.steps=17", "run.eval_every=100"], progress=False,
                        console=Console(file=io.StringIO()))
    assert all(a["steps"] == 17 for a in resumed["agents"])  # 10 from the checkpoints + 7
    status = json.loads((run_dir / "status.json").read_text())
    assert all(r["resumed_from"] == 10 for r in status["agents"].values())
    # a fresh figure after the resume's first chunk and at the end, none in between
    after = {(r["step"], r["eval_step"]) for r in agent_records(run_dir) if r.get("resumed_from") == 10}
    assert after == {(15, 15), (17, 17)}

    assert main(["status", str(run_dir)]) == 0
    assert "finished" in capsys.readouterr().out
    assert main(["status", str(tmp_path / "nope")]) == 1


def test_resume_refuses_a_changed_config_and_a_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        run_swarm(resume=tmp_path)
    assert main(["run", "--resume", str(tmp_path), "swarm"]) == 2  # a config with --resume is an error
