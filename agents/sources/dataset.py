"""``dataset``: rows of a local dataset, split among agents; one context per row.

``workload.path`` is a directory written by ``datasets``' ``save_to_disk`` (loaded with
``datasets.load_from_disk``; a ``DatasetDict`` must hold one split, or the path must name the
split's directory), or Parquet: a file, a glob, or a directory of ``*.parquet`` files (read
with pyarrow, sorted by path). Nothing is downloaded. ``workload.text_field`` names the column
of the text: non-empty strings.

``workload.partition``:

- ``key``: each distinct value of the column ``workload.partition_field`` is an agent (a string
  or an integer). Without a configured topology the data defines it: domain ``data``, team
  ``team`` unless ``workload.domain_field`` / ``workload.team_field`` name columns that place
  each agent (one team per agent); names sorted. With one, rows of other keys are ignored.
- ``iid``: a seeded shuffle, cut into one part per agent of the configured topology (required).
- ``dirichlet``: per label (column ``workload.partition_field``), shares drawn from
  Dirichlet(``workload.alpha``); one part per agent of the configured topology (required).

Parts go to agents in topology order; seed: ``workload.seed``. Within a part rows keep the
dataset's order, and every ``held_out_every``-th is held out. A document's source is
``DIR[row N]`` (for Parquet, the file and the row in it).
"""

from __future__ import annotations

import bisect
import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.config import WorkloadConfig
from agents.sources.document import (
    AgentDocuments,
    Document,
    LazyDocuments,
    WorkloadError,
    check_name,
    check_split,
    check_text,
    split_every,
)
from agents.sources.places import DOMAIN, TEAM, Place, check_given, derived_topology, place_agent, topology_agents

SAVED_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")  # what save_to_disk writes


@dataclass
class Rows:
    """A dataset as one Arrow table, and where each row came from.

    Attributes:
        table: every row (``pyarrow.Table``).
        starts: (first row, name) per file, ascending: row ``n`` is named after the last start <= n.
    """

    table: Any
    starts: list[tuple[int, str]]

    def where(self, row: int) -> str:
        """``NAME[row N]`` of a row, N counted within its file."""
        return _where(self.starts, row)


def _where(starts: list[tuple[int, str]], row: int) -> str:
    start, name = starts[bisect.bisect_right([s for s, _ in starts], row) - 1]
    return f"{name}[row {row - start}]"


def _load_saved(path: str, expanded: Path) -> Rows:
    import datasets

    try:
        ds = datasets.load_from_disk(str(expanded))
    except Exception as e:  # noqa: BLE001 - any failure of a user's directory is a data error
        raise WorkloadError(f"workload.path: {path!r}: cannot load the saved dataset: {e}") from None
    if isinstance(ds, datasets.DatasetDict):
        if len(ds) != 1:
            raise WorkloadError(f"workload.path: {path!r} holds the splits {sorted(ds)}; point workload.path at "
                                f"one of them, e.g. {os.path.join(path, sorted(ds)[0])}")
        ds = next(iter(ds.values()))
    return Rows(ds.with_format("arrow")[:], [(0, path)])  # [:] applies a saved indices mapping


def _parquet_files(path: str, expanded: str) -> list[Path]:
    if any(c in expanded for c in "*?["):
        files = [Path(m) for m in sorted(glob.glob(expanded, recursive=True)) if Path(m).is_file()]
    elif Path(expanded).is_dir():
        files = sorted(p for p in Path(expanded).rglob("*.parquet") if not p.name.startswith("."))
    elif Path(expanded).is_file():
        files = [Path(expanded)]
    else:
        raise WorkloadError(f"workload.path: {path!r}: no such file or directory (from {os.getcwd()})")
    if not files:
        raise WorkloadError(f"workload.path: {path!r} matches no Parquet file and is not a saved dataset "
                            f"(none of {list(SAVED_MARKERS)})")
    return files


def load_rows(cfg: WorkloadConfig) -> Rows:
    """The rows of ``workload.path`` (see the module docstring).

    Raises:
        WorkloadError: nothing there, an unreadable file, or Parquet files whose columns differ.
    """
    path = str(cfg.path)
    expanded = os.path.expanduser(path)
    if Path(expanded).is_dir() and any((Path(expanded) / m).is_file() for m in SAVED_MARKERS):
        return _load_saved(path, Path(expanded))
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables, starts, total = [], [], 0
    for file in _parquet_files(path, expanded):
        try:
            tables.append(pq.read_table(file))
        except (pa.ArrowException, OSError) as e:
            raise WorkloadError(f"{file}: not a readable Parquet file: {e}") from None
        starts.append((total, str(file)))
        total += tables[-1].num_rows
    try:
        return Rows(pa.concat_tables(tables), starts)
    except pa.ArrowException as e:
        raise WorkloadError(f"workload.path: {path!r}: the Parquet files' columns differ: {e}") from None


def _column(rows: Rows, name: str, setting: str) -> list:
    if name not in rows.table.column_names:
        raise WorkloadError(f"{rows.starts[0][1]}: no column {name!r} (workload.{setting}); "
                            f"columns: {rows.table.column_names}")
    return rows.table.column(name).to_pylist()


def _parts(cfg: WorkloadConfig, rows: Rows) -> tuple[dict[str, list[int]], dict[str, Place]]:
    """agent -> its rows, and agent -> (domain, team, first row) for the agents considered."""
    from agents.sources.partition import dirichlet_partition, iid_partition, key_partition

    if cfg.partition != "key":
        agents = topology_agents(cfg.topology or {})
        if cfg.partition == "iid":
            cut = iid_partition(rows.table.num_rows, len(agents), cfg.seed)
        else:
            labels = _column(rows, str(cfg.partition_field), "partition_field")
            if None in labels:
                raise WorkloadError(f"{rows.where(labels.index(None))}: field {cfg.partition_field!r} is null "
                                    "(workload.partition_field)")
            cut = dirichlet_partition(labels, len(agents), cfg.alpha, cfg.seed, min_size=cfg.held_out_every)
        return dict(zip(agents, cut, strict=True)), {}
    wanted = None if cfg.topology is None else set(topology_agents(cfg.topology))
    fields = (cfg.domain_field, cfg.team_field)
    domains = _column(rows, cfg.domain_field, "domain_field") if cfg.domain_field else None
    teams = _column(rows, cfg.team_field, "team_field") if cfg.team_field else None
    parts, places = {}, {}
    for key, members in key_partition(_column(rows, str(cfg.partition_field), "partition_field")).items():
        where = rows.where(members[0])
        if key is None:
            raise WorkloadError(f"{where}: field {cfg.partition_field!r} is null (workload.partition_field)")
        if wanted is not None and str(key) not in wanted:
            continue
        agent = check_name(key, where, str(cfg.partition_field))
        parts[agent] = members  # an Arrow column has one type: no two keys share a name
        for row in members:
            place = [check_name(values[row], rows.where(row), str(name)) if values else default
                     for values, name, default in ((domains, cfg.domain_field, DOMAIN), (teams, cfg.team_field, TEAM))]
            place_agent(places, agent, place[0], place[1], rows.where(row), fields)
            if not (domains or teams):
                break  # the default place: one row says it all
    return parts, places


def dataset_topology(cfg: WorkloadConfig) -> dict[str, dict[str, list[str]]]:
    """The configured topology checked against the data (``key``), else the one the data defines."""
    if cfg.partition != "key":
        return cfg.topology or {}  # required by the config for iid and dirichlet
    parts, places = _parts(cfg, load_rows(cfg))
    if cfg.topology is not None:
        check_given(cfg.topology, places, (cfg.domain_field, cfg.team_field),
                    f"no row of {cfg.path} has {cfg.partition_field}=<that name>")
        return cfg.topology
    return derived_topology(places)


class RowDocuments(LazyDocuments):
    """Rows of one agent: their texts taken out of the table (so the rest can be freed), read on access."""

    def __init__(self, rows: Rows, members: list[int], text_field: str) -> None:
        import pyarrow as pa

        self.members, self.text_field = members, text_field
        self.starts = rows.starts
        self.texts = rows.table.column(text_field).take(pa.array(members, type=pa.int64()))

    def __len__(self) -> int:
        return len(self.members)

    def _load(self, index: int) -> Document:
        where = _where(self.starts, self.members[index])
        return Document(check_text(self.texts[index].as_py(), where, self.text_field), where)


def _check_texts(rows: Rows, members: list[int], field: str) -> None:
    """Every text of ``members`` is a non-empty string (vectorised; the first bad row is reported)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if field not in rows.table.column_names:
        raise WorkloadError(f"{rows.starts[0][1]}: no column {field!r} (workload.text_field); "
                            f"columns: {rows.table.column_names}")
    column = rows.table.column(field)
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)
            or pa.types.is_string_view(column.type)):
        raise WorkloadError(f"{rows.starts[0][1]}: column {field!r} holds {column.type}, not strings "
                            "(workload.text_field)")
    texts = column.take(pa.array(members, type=pa.int64()))
    blank = pc.fill_null(pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(texts)), 0), True)
    first = pc.index(blank, True).as_py()
    if first >= 0:
        check_text(texts[first].as_py(), rows.where(members[first]), field)


def _documents(cfg: WorkloadConfig, rows: Rows, members: list[int]) -> AgentDocuments:
    _check_texts(rows, members, cfg.text_field)
    train, held = split_every(members, cfg.held_out_every)
    return AgentDocuments(train=RowDocuments(rows, train, cfg.text_field),
                          held_out=RowDocuments(rows, held, cfg.text_field))


def dataset_documents(cfg: WorkloadConfig, agent: str) -> AgentDocuments:
    """One agent's rows, every ``held_out_every``-th held out; texts checked."""
    rows = load_rows(cfg)
    parts, _ = _parts(cfg, rows)
    return _documents(cfg, rows, parts.get(agent, []))


def check_dataset(cfg: WorkloadConfig, agents: list[str]) -> list[str]:
    """Load once; check the topology against the data, every agent's texts and split (empty: a message)."""
    rows = load_rows(cfg)
    parts, places = _parts(cfg, rows)
    if cfg.partition == "key" and cfg.topology is not None:
        check_given(cfg.topology, places, (cfg.domain_field, cfg.team_field),
                    f"no row of {cfg.path} has {cfg.partition_field}=<that name>")
    problems = []
    for agent in agents:
        docs = _documents(cfg, rows, parts.get(agent, []))
        problem = check_split(agent, docs.train, docs.held_out, cfg.held_out_every, "rows")
        if problem:
            problems.append(problem)
    return problems
