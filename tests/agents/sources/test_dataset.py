"""The dataset kind: save_to_disk directories and Parquet, partitioned by key, IID or Dirichlet."""

import pytest

from agents.config import WorkloadConfig
from agents.sources import WorkloadError, check_workload, documents_for, topology_of
from agents.topology import AgentSpec, agent_specs

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


def _rows(n=30, users=("ann", "bob", "cid")):
    return {"text": [f"row {i}\r\n" for i in range(n)], "user": [users[i % len(users)] for i in range(n)],
            "team": [{"ann": "red", "bob": "blue", "cid": "red"}[users[i % len(users)]] for i in range(n)],
            "label": [i % 4 for i in range(n)]}


def _parquet(path, columns):
    pq.write_table(pa.table(columns), path)
    return path


def _saved(path, columns):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict(columns).save_to_disk(str(path))
    return path


def _cfg(path, **kw):
    kw.setdefault("partition_field", "user")
    return WorkloadConfig(kind="dataset", path=str(path), **kw)


@pytest.mark.parametrize("make", [_parquet, _saved])
def test_key_partition_rows_split_and_sources(tmp_path, make):
    path = make(tmp_path / "d", _rows())
    cfg = _cfg(path)
    assert topology_of(cfg) == {"data": {"team": ["ann", "bob", "cid"]}}
    check_workload(cfg)
    docs = documents_for(cfg, AgentSpec("bob", "team", "data"))
    bob = list(range(1, 30, 3))  # bob's rows
    assert [d.text for d in docs.train] == [f"row {r}\r\n" for i, r in enumerate(bob) if i % 5 != 4]
    assert [d.source for d in docs.held_out] == [f"{path}[row 13]", f"{path}[row 28]"]


def test_key_partition_topology_from_a_team_column_and_given(tmp_path):
    path = _parquet(tmp_path / "d.parquet", _rows())
    assert topology_of(_cfg(path, team_field="team")) == {"data": {"blue": ["bob"], "red": ["ann", "cid"]}}
    given = _cfg(path, topology={"d": {"t": ["cid", "ann"]}})
    assert topology_of(given) == {"d": {"t": ["cid", "ann"]}}
    check_workload(given)
    with pytest.raises(WorkloadError, match="workload.topology names agent 'eve', but no row of"):
        topology_of(_cfg(path, topology={"d": {"t": ["eve"]}}))


def test_parquet_directory_and_glob_name_file_and_row(tmp_path):
    (tmp_path / "p").mkdir()
    rows = _rows(30)
    _parquet(tmp_path / "p" / "a.parquet", {k: v[:15] for k, v in rows.items()})
    _parquet(tmp_path / "p" / "b.parquet", {k: v[15:] for k, v in rows.items()})
    for path in (tmp_path / "p", tmp_path / "p" / "*.parquet"):
        docs = documents_for(_cfg(path), AgentSpec("ann", "team", "data"))
        assert [d.source for d in docs.held_out] == [f"{tmp_path}/p/a.parquet[row 12]",  # ann: rows 0, 3, ...
                                                     f"{tmp_path}/p/b.parquet[row 12]"]


@pytest.mark.parametrize("partition", ["iid", "dirichlet"])
def test_iid_and_dirichlet_give_disjoint_covering_seeded_parts(tmp_path, partition):
    path = _parquet(tmp_path / "d.parquet", _rows(200))
    topology = {"data": {"x": ["a0", "a1"], "y": ["a2", "a3"]}}
    cfg = _cfg(path, partition=partition, partition_field="label", topology=topology, seed=3)
    check_workload(cfg)

    def texts(cfg):
        out = {}
        for spec in agent_specs(cfg):
            docs = documents_for(cfg, spec)
            out[spec.name] = [d.text for d in [*docs.train, *docs.held_out]]
        return out

    parts = texts(cfg)
    every = [t for p in parts.values() for t in p]
    assert sorted(every) == sorted(f"row {i}\r\n" for i in range(200))  # disjoint and covering
    assert parts == texts(cfg)
    assert parts != texts(_cfg(path, partition=partition, partition_field="label", topology=topology, seed=4))


@pytest.mark.parametrize(("column", "value", "message"), [
    ("text", 7, r"d.parquet: column 'text' holds int64, not strings"),
    ("text", None, r"d.parquet\[row 4\]: field 'text' is missing or null"),
    ("text", " ", r"d.parquet\[row 4\]: field 'text' is empty"),
    ("user", None, r"d.parquet\[row 4\]: field 'user' is null \(workload.partition_field\)"),
    ("user", "a/b", r"d.parquet\[row 4\]: field 'user': 'a/b' is not a usable name"),
])
def test_bad_rows_name_the_row_and_field(tmp_path, column, value, message):
    rows = _rows(30, users=("ann",) * 3)
    rows[column] = [value if i == 4 else v for i, v in enumerate(rows[column])]
    if value == 7:
        rows[column] = [7] * 30
    path = _parquet(tmp_path / "d.parquet", rows)
    with pytest.raises(WorkloadError, match=message):
        check_workload(_cfg(path))


def test_missing_columns_paths_and_splits(tmp_path):
    path = _parquet(tmp_path / "d.parquet", _rows())
    with pytest.raises(WorkloadError, match=r"d.parquet: no column 'body' \(workload.text_field\); columns: \["):
        check_workload(_cfg(path, text_field="body"))
    with pytest.raises(WorkloadError, match=r"no column 'who' \(workload.partition_field\)"):
        check_workload(_cfg(path, partition_field="who"))
    with pytest.raises(WorkloadError, match=r"workload.path: '.*nope': no such file or directory"):
        check_workload(_cfg(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(WorkloadError, match="matches no Parquet file and is not a saved dataset"):
        check_workload(_cfg(tmp_path / "empty"))
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(WorkloadError, match=r"bad.parquet: not a readable Parquet file"):
        check_workload(_cfg(tmp_path / "bad.parquet"))


def test_a_dataset_dict_must_name_its_split(tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict(_rows())
    datasets.DatasetDict({"train": ds, "test": ds}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(WorkloadError, match=r"holds the splits \['test', 'train'\]; point workload.path at one"):
        check_workload(_cfg(tmp_path / "dd"))
    check_workload(_cfg(tmp_path / "dd" / "train"))
    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "one"))
    assert topology_of(_cfg(tmp_path / "one")) == {"data": {"team": ["ann", "bob", "cid"]}}


def test_too_few_rows_for_an_agent(tmp_path):
    path = _parquet(tmp_path / "d.parquet", _rows(12))
    with pytest.raises(WorkloadError, match="3 of 3 agents cannot run:\n  agent 'ann': 4 rows"):
        check_workload(_cfg(path))
    with pytest.raises(WorkloadError, match="agent 'a1': 4 rows"):
        check_workload(_cfg(path, partition="iid", topology={"d": {"t": ["a0", "a1", "a2"]}}))
