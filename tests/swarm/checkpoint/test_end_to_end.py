"""A real ``swarm run``, checked and forked with ``swarm checkpoint``; ``swarm run --resume`` on the fork runs."""

import io
import json

from rich.console import Console

from swarm.cli import main
from swarm.config import load_config
from swarm.run.command import run_swarm
from tests.cluster.test_runtime import OVERRIDES


def test_a_real_run_verifies_forks_and_the_fork_resumes(ray_session, tmp_path, capsys):
    cfg = load_config("swarm", [*OVERRIDES, "run.steps=10", f"run.out_dir={tmp_path}", "run.name=r"])
    run_swarm(cfg, console=Console(file=io.StringIO()))
    run = tmp_path / "r"
    assert main(["checkpoint", "verify", str(run)]) == 0
    assert "all good" in capsys.readouterr().out
    assert main(["checkpoint", "show", str(run), "--json"]) == 0
    stores = {s["store"]: s for s in json.loads(capsys.readouterr().out)["stores"]}
    assert {k.split("/")[0] for k in stores} == {"levels", "agents"} and len(stores) == 8  # 4 servers, 4 agents
    for s in stores.values():  # every store checkpointed, with what it saw and P's digest
        assert s["newest"]["projection"] and s["newest"]["pushes"] is not None
    team = next(k for k in stores if k.startswith("levels/swarm/"))
    assert stores[team]["newest"]["pushes"] > 0 and stores[team]["newest"]["bytes"] > 0
    newest = stores[team]["newest"]

    assert main(["checkpoint", "fork", str(run / team), "--to", str(tmp_path / "f"), "--checkpoint",
                 newest["id"][:8]]) == 0
    capsys.readouterr()
    resumed = run_swarm(resume=tmp_path / "f", overrides=["run.steps=12"], progress=False,
                        console=Console(file=io.StringIO()))
    assert resumed["state"] == "finished" and all(a["steps"] == 12 for a in resumed["agents"])
    assert main(["checkpoint", "verify", str(tmp_path / "f")]) == 0
    capsys.readouterr()
    assert main(["checkpoint", "show", str(tmp_path / "f" / team), "--json"]) == 0
    lineage = json.loads(capsys.readouterr().out)["stores"][0]["lineage"]
    ids = [r["id"] for r in lineage]
    assert newest["id"] in ids and lineage[-1]["version"] > newest["version"]  # the fork went on from there
    assert [r["parent"] for r in lineage[1:]] == ids[:-1]  # one chain through the checkpoint forked from
