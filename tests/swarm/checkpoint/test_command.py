"""``swarm checkpoint show|verify|fork`` on a run directory built with real stores (no Ray)."""

import json

import pytest
import torch

from cluster.store import LevelStore
from swarm.checkpoint.fork import fork
from swarm.checkpoint.stores import CheckpointError
from swarm.cli import main
from swarm.config import config_hash, load_config, to_yaml

OVERRIDES = ["workload=synthetic", "pretrain.enabled=false", "levels.rank=8"]
MODULES = ("model.layers.0.mlp.up_proj", "model.layers.0.self_attn.q_proj")


def level_state(i: int, rank: int = 8) -> dict[str, torch.Tensor]:
    return {f"B/{m}": torch.full((4, rank), float(i + k)) for k, m in enumerate(MODULES)}


@pytest.fixture
def run(tmp_path):
    """A run directory: config.yaml; swarm/red with 4 checkpoints (2 pruned) and a journal; foundation with
    one; an agent with two. Every store is a real LevelStore under the config's hash."""
    cfg = load_config("swarm", OVERRIDES)
    run = tmp_path / "r"
    run.mkdir()
    (run / "config.yaml").write_text(to_yaml(cfg))
    h = config_hash(cfg)
    red = LevelStore(run / "levels" / "swarm" / "red", config_hash=h)
    for v in range(1, 5):
        red.append(level_state(v), {"kind": "push", "seq": v})
        red.checkpoint(v, level_state(v), {"state": {"stats": {"accepted": 10 * v}}})
    red.append(level_state(9), {"kind": "push", "seq": 9})
    LevelStore(run / "levels" / "foundation", config_hash=h).checkpoint(
        2, level_state(0), {"state": {"stats": {"accepted": 3}}})
    agent = LevelStore(run / "agents" / "python" / "text" / "json", config_hash=h)
    for step in (10, 20):
        agent.checkpoint(step, {f"levels/agent/{m}": torch.ones(4, 8) * step for m in MODULES},
                         {"counters": {"pushes": step // 5}})
    return run


def cli(capsys, *argv):
    code = main(["checkpoint", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_show_lists_every_store_and_a_store_s_whole_lineage(run, capsys):
    code, out, _ = cli(capsys, "show", str(run), "--json")
    assert code == 0
    view = {s["store"]: s for s in json.loads(out)["stores"]}
    assert list(view) == ["levels/foundation", "levels/swarm/red", "agents/python/text/json"]
    red = view["levels/swarm/red"]
    assert [r["version"] for r in red["lineage"]] == [1, 2, 3, 4] and red["complete"]
    assert [r["kept"] for r in red["lineage"]] == [False, False, True, True]
    assert [r["pushes"] for r in red["lineage"]] == [10, 20, 30, 40] and red["newest"]["records"] == 4
    assert red["newest"]["parent"] == red["lineage"][2]["id"] and red["size"] > red["newest"]["size"] > 0
    assert view["agents/python/text/json"]["newest"]["pushes"] == 4
    assert view["agents/python/text/json"]["newest"]["bytes"] is None  # an agent's checkpoint does not say
    code, out, _ = cli(capsys, "show", str(run))
    assert code == 0 and "newest checkpoint per store" in out and "4 (2 kept)" in out
    code, out, _ = cli(capsys, "show", str(run / "swarm" / "red"))
    assert code == 0 and "levels/swarm/red: lineage, newest first" in out
    assert out.count("pruned") == 2 and red["lineage"][0]["id"][:12] in out
    code, _, err = cli(capsys, "show", str(run / "swarm" / "blue"))
    assert code == 2 and "'swarm/blue' is no level server or agent store" in err and "levels/swarm/red" in err
    code, _, err = cli(capsys, "show", str(run.parent / "elsewhere"))
    assert code == 2 and "not in a run directory" in err


def test_verify_passes_then_names_each_problem(run, capsys):
    code, out, _ = cli(capsys, "verify", str(run))
    assert code == 0 and "3 stores, all good" in out
    ckpt = run / "levels" / "swarm" / "red" / "ckpt-000000000004" / "tensors.safetensors"
    data = bytearray(ckpt.read_bytes())
    data[-1] ^= 0x01
    ckpt.write_bytes(bytes(data))
    seg = run / "levels" / "foundation" / "journal-000000000002.log"
    seg.write_bytes(b"\x00\x00\x00\x10" + b"\x00" * 4 + b"x" * 16)  # a whole record with a bad checksum
    code, out, _ = cli(capsys, "verify", str(run), "--json")
    assert code == 1
    problems = {k: v["problems"] for k, v in json.loads(out)["stores"].items()}
    [corrupt] = problems["levels/swarm/red"]
    assert f"{ckpt}: the tensors hash to" in corrupt and "manifest.json says id" in corrupt
    [journal] = problems["levels/foundation"]
    assert journal.startswith(f"{seg.parent}/journal-000000000002.log: a record with a bad checksum at byte 0")
    assert problems["agents/python/text/json"] == []
    code, out, _ = cli(capsys, "verify", str(run / "agents" / "python" / "text" / "json"))
    assert code == 0 and "1 store, all good" in out


def test_verify_takes_the_rank_a_checkpoint_grew_to_and_refuses_a_growth_chain_that_does_not_fit(run, capsys):
    """A grown level (rank 8 -> 12 -> 16, as automatic growth leaves it) verifies against levels.rank=8 and its
    recorded growths; B at a rank its growths do not explain, or a chain with a gap, is a problem."""
    h = config_hash(load_config("swarm", OVERRIDES))
    growths = [{"version": 3, "from_rank": 8, "to_rank": 12, "rows": {}}, {"version": 5, "from_rank": 12, "to_rank": 16,
                                                                         "rows": {}}]
    LevelStore(run / "levels" / "foundation", config_hash=h).checkpoint(
        6, level_state(6, rank=16), {"state": {"stats": {"accepted": 9}, "growths": growths}})
    code, out, _ = cli(capsys, "verify", str(run / "foundation"))
    assert code == 0 and "all good" in out, out
    LevelStore(run / "levels" / "foundation", config_hash=h).checkpoint(
        7, level_state(7, rank=16), {"state": {"stats": {"accepted": 9}, "growths": growths[:1]}})
    code, out, _ = cli(capsys, "verify", str(run / "foundation"))
    assert code == 1 and "2 write matrices have rank 16" in out and "grown by 8->12 to 12" in out, out
    LevelStore(run / "levels" / "foundation", config_hash=h).checkpoint(
        8, level_state(8, rank=16), {"state": {"stats": {"accepted": 9}, "growths": growths[1:]}})
    code, out, _ = cli(capsys, "verify", str(run / "foundation"))
    assert code == 1 and "a growth 12->16 does not start at rank 8" in out, out


def test_verify_refuses_checkpoints_of_another_config_or_projection(run, capsys):
    cfg = load_config("swarm", [*OVERRIDES[:2], "levels.rank=16"])
    (run / "config.yaml").write_text(to_yaml(cfg))
    code, out, _ = cli(capsys, "verify", str(run / "foundation"))
    assert code == 1
    assert "ckpt-000000000002/manifest.json: written under config hash" in out
    assert "2 write matrices have rank 8" in out and "levels.rank=16: another read projection P" in out


def test_fork_from_a_chosen_checkpoint_resumes_there(run, capsys, tmp_path):
    red = json.loads(cli(capsys, "show", str(run / "swarm/red"), "--json")[1])["stores"][0]
    older = red["lineage"][2]  # version 3, kept
    code, out, _ = cli(capsys, "fork", str(run / "swarm" / "red"), "--checkpoint", older["id"][:10],
                       "--to", str(tmp_path / "f"), "run.steps=50")
    assert code == 0 and f"swarm run --resume {tmp_path / 'f'}" in out
    report = json.loads((tmp_path / "f" / "fork.json").read_text())
    versions = {name: s["version"] for name, s in report["stores"].items()}
    assert versions == {"levels/foundation": 2, "levels/swarm/red": 3, "agents/python/text/json": 20}
    assert load_config(tmp_path / "f" / "config.yaml").run.steps == 50
    h = config_hash(load_config(run / "config.yaml"))
    rec = LevelStore(tmp_path / "f" / "levels" / "swarm" / "red", config_hash=h).recover()
    assert rec.checkpoint.version == 3 and rec.records == [] and not rec.warnings  # exactly the checkpoint
    assert torch.equal(rec.tensors[f"B/{MODULES[0]}"], level_state(3)[f"B/{MODULES[0]}"])
    forked = LevelStore(tmp_path / "f" / "levels" / "swarm" / "red", config_hash=h)
    assert [r.version for r in forked.lineage().records] == [1, 2, 3]  # its ancestors stay listed
    forked.checkpoint(5, level_state(5))  # the fork goes on from there
    assert [(r.version, r.parent) for r in forked.lineage().records][-1] == (5, older["id"])
    assert cli(capsys, "verify", str(tmp_path / "f"))[0] == 0


def test_fork_refuses_bad_requests_precisely(run, capsys, tmp_path):
    red = json.loads(cli(capsys, "show", str(run / "swarm/red"), "--json")[1])["stores"][0]
    new = str(tmp_path / "f")
    cases = [
        ((str(run / "swarm" / "blue"), "--to", new), "'swarm/blue' is no level server or agent store"),
        ((str(run / "swarm/red"), "--checkpoint", "abcdef12", "--to", new),
         "levels/swarm/red: no checkpoint 'abcdef12'"),
        ((str(run / "swarm/red"), "--checkpoint", red["lineage"][0]["id"][:12], "--to", new), "was pruned"),
        ((str(run), "--checkpoint", red["lineage"][3]["id"][:12], "--to", new), "checkpoint ids belong to one store"),
        ((str(run), "--to", str(run)), "already exists"),
        ((str(run), "--to", new, "levels.rank=16"), "'levels.rank=16' would change what the checkpoints learned"),
        ((str(run),), "--to NEW_RUN_DIR"),
    ]
    for argv, message in cases:
        code, _, err = cli(capsys, "fork", *argv)
        assert code == 2 and message in err, (argv, err)
    ckpt = run / "levels" / "swarm" / "red" / "ckpt-000000000004" / "tensors.safetensors"
    ckpt.write_bytes(ckpt.read_bytes()[:-1] + bytes([ckpt.read_bytes()[-1] ^ 1]))
    code, _, err = cli(capsys, "fork", str(run / "swarm/red"), "--to", new)
    assert code == 2 and "cannot fork from ckpt-000000000004, it is corrupt" in err
    assert not (tmp_path / "f").exists() and not list(tmp_path.glob(".f.fork-*"))  # nothing half-made
    # the whole run forks from the newest checkpoint that verifies, and says which it skipped
    report = fork(run, new)
    assert report["stores"]["levels/swarm/red"]["version"] == 3
    assert any("skipped ckpt-000000000004" in n for n in report["notes"])
    with pytest.raises(CheckpointError, match="already exists"):
        fork(run, new)
