"""The entry points for any kind, the workload schema, the loader's hook, and light imports."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agents.config import WorkloadConfig
from agents.sources import WorkloadError, check_workload, documents_for, stdlib_documents, topology_of
from agents.topology import AgentSpec, agent_specs

ROOT = Path(__file__).resolve().parents[3]


def test_import_loads_neither_torch_nor_data_libraries():
    code = ("import sys, agents.sources, agents.config, agents.sources.kinds\n"
            "from agents.sources import topology_of, documents_for, check_workload, Document\n"
            "print(sorted(m for m in ('torch', 'transformers', 'datasets', 'pyarrow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_stdlib_and_synthetic_topologies_are_the_configured_or_default_ones():
    default = {"python": {"text": ["json", "email"], "net": ["http", "urllib"]}}
    assert topology_of(WorkloadConfig()) == default
    assert topology_of(WorkloadConfig(kind="synthetic")) == default
    toy = {"toy": {"red": ["a1"]}}
    assert topology_of(WorkloadConfig(kind="synthetic", topology=toy)) == toy


def test_documents_for_dispatches_stdlib_and_synthetic():
    cfg = WorkloadConfig(held_out_every=3)
    spec = agent_specs(cfg)[0]
    got, want = documents_for(cfg, spec), stdlib_documents(["json"], 3)
    assert list(got.train) == list(want.train) and list(got.held_out) == list(want.held_out)
    docs = documents_for(WorkloadConfig(kind="synthetic"), AgentSpec("a1", "red", "toy"))
    assert len(docs.held_out) == 1 and docs.train[0].source == "synthetic:toy/red/a1[0]"


def test_check_workload_stdlib_lists_every_bad_agent():
    check_workload(WorkloadConfig())
    check_workload(WorkloadConfig(kind="synthetic"))
    bad = WorkloadConfig(topology={"p": {"t": ["json", "no_such_pkg", "textwrap"]}})
    with pytest.raises(WorkloadError, match="2 of 3 agents cannot run") as err:
        check_workload(bad)
    assert "agent 'no_such_pkg': stdlib package 'no_such_pkg' not found" in str(err.value)
    assert "agent 'textwrap'" in str(err.value)


@pytest.mark.parametrize(("fields", "message"), [
    (dict(kind="csv"),
     r"workload.kind: 'csv' is not one of \['stdlib', 'synthetic', 'code', 'files', 'jsonl', 'dataset'\]"),
    (dict(kind="files"), "workload.files: kind 'files' needs"),
    (dict(kind="files", files={"a": []}), "workload.files: agent 'a' has no"),
    (dict(kind="jsonl"), "workload.paths: kind 'jsonl' needs"),
    (dict(kind="jsonl", paths=["x"], text_field=""), "workload.text_field: must not be empty"),
    (dict(kind="dataset"), "workload.path: kind 'dataset' needs"),
    (dict(kind="dataset", path="p", partition="hash"), r"workload.partition: 'hash' is not one of"),
    (dict(kind="dataset", path="p"), "workload.partition_field: partition 'key' needs"),
    (dict(kind="dataset", path="p", partition="dirichlet"), "workload.partition_field: partition 'dirichlet'"),
    (dict(kind="dataset", path="p", partition="iid"), "workload.topology: partition 'iid' gives one part per agent"),
    (dict(kind="dataset", path="p", partition_field="u", alpha=0.0), "workload.alpha: invalid value 0.0"),
    (dict(kind="files", files={"a": ["x"]}, topology={"d": {"t": []}}), "workload.topology: no agents"),
])
def test_schema_refuses_what_it_can_see_without_data(fields, message):
    with pytest.raises(ValueError, match=message):
        WorkloadConfig(**fields)


def test_data_kinds_may_leave_the_topology_to_the_data():
    cfg = WorkloadConfig(kind="jsonl", paths=["x.jsonl"])
    assert cfg.topology is None
    with pytest.raises(ValueError, match="reads its topology from the data"):
        _ = cfg.teams


def _load(overrides):
    from swarm.config import load_config
    return load_config(None, overrides)


def test_loader_sets_the_topology_from_the_data(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps({"agent": a, "text": "hi", "team": t}) + "\n"
                            for a, t in [("ann", "red"), ("bob", "blue")] * 5))
    cfg = _load(["workload=jsonl", f"workload.paths=[{path}]", "workload.team_field=team", "workload.topology=null"])
    assert cfg.workload.topology == {"data": {"blue": ["bob"], "red": ["ann"]}}
    assert [s.id for s in agent_specs(cfg.workload)] == ["data/blue/bob", "data/red/ann"]


def test_loader_replaces_the_example_files_and_names_data_errors(tmp_path):
    (tmp_path / "n").mkdir()
    (tmp_path / "n" / "a.txt").write_text("a")
    cfg = _load(["workload=files", f"workload.files={{mine: [{tmp_path / 'n'}]}}"])
    assert cfg.workload.files == {"mine": [str(tmp_path / "n")]}  # not merged with the example's agents
    assert cfg.workload.topology == {"files": {"team": ["mine"]}}
    from swarm.config import ConfigError
    with pytest.raises(ConfigError, match=r"workload.paths: '.*nope.jsonl': no such file"):
        _load(["workload=jsonl", f"workload.paths=[{tmp_path / 'nope.jsonl'}]", "workload.topology=null"])
    assert _load(["workload=jsonl"]).workload.topology == {"support": {"billing": ["alice", "bob"],
                                                                       "tech": ["carol", "dan"]}}  # data unread


def test_example_files_workload_runs_on_this_checkout(monkeypatch):
    monkeypatch.chdir(ROOT)
    cfg = _load(["workload=files"])
    assert cfg.workload.topology == {"files": {"team": ["docs", "configs"]}}
    check_workload(cfg.workload)
