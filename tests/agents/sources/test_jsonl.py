"""The jsonl kind: records routed to agents, topologies from the data, and errors naming path:LINE."""

import json

import pytest

from agents.config import WorkloadConfig
from agents.sources import WorkloadError, check_workload, documents_for, topology_of
from agents.topology import AgentSpec


def _write(path, records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def _records(agents=("ann", "bob"), n=5, **extra):
    return [{"agent": a, "text": f"{a} says {i}\r\nbye", **{k: v[a] for k, v in extra.items()}}
            for i in range(n) for a in agents]


def _cfg(*paths, **kw):
    return WorkloadConfig(kind="jsonl", paths=[str(p) for p in paths], **kw)


def test_records_are_routed_split_and_read_back(tmp_path):
    path = _write(tmp_path / "c.jsonl", _records(n=6))
    cfg = _cfg(path)
    assert topology_of(cfg) == {"data": {"team": ["ann", "bob"]}}
    check_workload(cfg)
    docs = documents_for(cfg, AgentSpec("bob", "team", "data"))
    assert [d.text for d in docs.train] == [f"bob says {i}\r\nbye" for i in (0, 1, 2, 3, 5)]
    assert [d.source for d in docs.held_out] == [f"{path}:10"]  # bob's 5th record is line 10
    assert docs.held_out[0].text == "bob says 4\r\nbye"


def test_topology_from_team_and_domain_fields(tmp_path):
    teams = {"ann": "red", "bob": "blue", "cid": "red"}
    orgs = {"ann": "acme", "bob": "acme", "cid": "acme"}
    path = _write(tmp_path / "c.jsonl", _records(("cid", "bob", "ann"), team=teams, org=orgs))
    cfg = _cfg(path, team_field="team", domain_field="org")
    assert topology_of(cfg) == {"acme": {"blue": ["bob"], "red": ["ann", "cid"]}}


def test_globs_directories_blank_lines_and_integer_agents(tmp_path):
    (tmp_path / "d").mkdir()
    _write(tmp_path / "d" / "1.jsonl", [*_records(("ann",), 3), "", "  "])
    _write(tmp_path / "d" / "2.jsonl", [{"agent": 7, "text": "seven"}] * 5 + _records(("ann",), 2))
    (tmp_path / "d" / "skip.txt").write_text("not jsonl")
    for entry in (tmp_path / "d", tmp_path / "d" / "*.jsonl"):
        cfg = _cfg(entry)
        assert topology_of(cfg) == {"data": {"team": ["7", "ann"]}}
        check_workload(cfg)
        assert len(documents_for(cfg, AgentSpec("ann", "team", "data")).train) == 4


def test_given_topology_ignores_other_agents_and_needs_its_own(tmp_path):
    path = _write(tmp_path / "c.jsonl", [*_records(n=5), {"agent": "zed", "text": 3}])  # zed's bad text: ignored
    cfg = _cfg(path, topology={"d": {"t": ["ann"]}})
    assert topology_of(cfg) == {"d": {"t": ["ann"]}}
    check_workload(cfg)
    with pytest.raises(WorkloadError, match="workload.topology names agent 'eve', but no record of"):
        check_workload(_cfg(path, topology={"d": {"t": ["ann", "eve"]}}))


def test_given_topology_must_agree_with_team_field(tmp_path):
    path = _write(tmp_path / "c.jsonl", _records(team={"ann": "red", "bob": "blue"}))
    with pytest.raises(WorkloadError, match=r"c.jsonl:2: agent 'bob' is in data/blue by the data but in d/red"):
        check_workload(_cfg(path, team_field="team", topology={"d": {"red": ["ann", "bob"]}}))


@pytest.mark.parametrize(("line", "message"), [
    ('{"agent": "ann", "text": ', r"c.jsonl:3: not valid JSON"),
    ('["ann", "hi"]', r"c.jsonl:3: a record must be a JSON object, got list"),
    ('{"text": "hi"}', r"c.jsonl:3: field 'agent' is missing \(workload.agent_field\)"),
    ('{"agent": "ann"}', r"c.jsonl:3: field 'text' is missing or null"),
    ('{"agent": "ann", "text": 5}', r"c.jsonl:3: field 'text' must be a string, got int"),
    ('{"agent": "ann", "text": ""}', r"c.jsonl:3: field 'text' is empty"),
    ('{"agent": "a/b", "text": "hi"}', r"c.jsonl:3: field 'agent': 'a/b' is not a usable name"),
    ('{"agent": {"x": 1}, "text": "hi"}', r"c.jsonl:3: field 'agent' must be a string"),
])
def test_bad_records_name_path_line_and_field(tmp_path, line, message):
    path = _write(tmp_path / "c.jsonl", [*_records(n=1), line])
    with pytest.raises(WorkloadError, match=message):
        check_workload(_cfg(path))


def test_undecodable_line_names_path_line_and_byte(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_bytes(b'{"agent": "ann", "text": "ok"}\n{"agent": "ann", "text": "caf\xe9"}\n')
    with pytest.raises(WorkloadError, match=r"c.jsonl:2: not UTF-8 text \(byte 29"):
        check_workload(_cfg(path))


def test_an_agent_in_two_teams_is_an_error_naming_both_lines(tmp_path):
    path = _write(tmp_path / "c.jsonl", [{"agent": "ann", "text": "a", "team": "red"},
                                         {"agent": "ann", "text": "b", "team": "blue"}])
    with pytest.raises(WorkloadError, match=r"c.jsonl:2: agent 'ann' is in domain/team data/blue here but in "
                                            r"data/red at .*c.jsonl:1"):
        topology_of(_cfg(path, team_field="team"))
    with pytest.raises(WorkloadError, match=r"c.jsonl:1: field 'tteam' is missing \(workload.team_field\)"):
        topology_of(_cfg(path, team_field="tteam"))


def test_a_team_in_two_domains_is_an_error(tmp_path):
    path = _write(tmp_path / "c.jsonl", [{"agent": "ann", "text": "a", "team": "red", "org": "x"},
                                         {"agent": "bob", "text": "b", "team": "red", "org": "y"}])
    with pytest.raises(WorkloadError, match="team 'red' is in domain 'y' here but in 'x'"):
        topology_of(_cfg(path, team_field="team", domain_field="org"))


def test_missing_paths_and_empty_partitions(tmp_path):
    with pytest.raises(WorkloadError, match=r"workload.paths: '.*nope.jsonl': no such file"):
        check_workload(_cfg(tmp_path / "nope.jsonl"))
    with pytest.raises(WorkloadError, match=r"workload.paths: glob '.*\*.jsonl' matches no file"):
        check_workload(_cfg(tmp_path / "*.jsonl"))
    path = _write(tmp_path / "c.jsonl", [*_records(("ann",), 5), *_records(("bob",), 2)])
    with pytest.raises(WorkloadError, match="1 of 2 agents cannot run:\n  agent 'bob': 2 records"):
        check_workload(_cfg(path))
