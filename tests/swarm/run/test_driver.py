"""``swarm run`` end to end on the session's Ray: run directory, summary, resume, status."""

import io
import json

import pytest
from rich.console import Console

from swarm.cli import main
from swarm.config import ConfigError, load_config
from swarm.run.driver import run_swarm
from tests.cluster.test_runtime import OVERRIDES


def test_run_writes_its_directory_and_resume_continues_from_the_checkpoints(ray_session, tmp_path, capsys):
    cfg = load_config("swarm", [*OVERRIDES, "run.steps=10", f"run.out_dir={tmp_path}", "run.name=r"])
    out = io.StringIO()
    summary = run_swarm(cfg, progress=False, console=Console(file=out, width=200))
    run_dir = tmp_path / "r"
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
    resumed = run_swarm(resume=run_dir, overrides=["run.steps=15"], progress=False,
                        console=Console(file=io.StringIO()))
    assert all(a["steps"] == 15 for a in resumed["agents"])  # 10 from the checkpoints + 5
    status = json.loads((run_dir / "status.json").read_text())
    assert all(r["resumed_from"] == 10 for r in status["agents"].values())

    assert main(["status", str(run_dir)]) == 0
    assert "finished" in capsys.readouterr().out
    assert main(["status", str(tmp_path / "nope")]) == 1


def test_resume_refuses_a_changed_config_and_a_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        run_swarm(resume=tmp_path)
    assert main(["run", "--resume", str(tmp_path), "swarm"]) == 2  # a config with --resume is an error
