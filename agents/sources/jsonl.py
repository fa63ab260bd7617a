"""``jsonl``: records of JSON Lines files, routed to agents by a field; one context per record.

``workload.paths`` lists files, directories (their ``*.jsonl`` files, recursively, hidden ones
skipped) or glob patterns; files are read in that order, globs and directories sorted. Each
non-blank line is one JSON object (UTF-8). Its ``workload.text_field`` (default ``text``) is the
document, a non-empty string; its ``workload.agent_field`` (default ``agent``) names the agent
(a string or an integer). With ``workload.team_field`` / ``workload.domain_field`` and no
configured topology, the topology is read from the data: each agent must stay in one team and
one domain (an unset field means domain ``data`` / team ``team``), and names are sorted. With a
configured topology, records of agents outside it are ignored, and a team/domain field that is
set must agree with it.

Every ``held_out_every``-th record of each agent is held out. A document keeps only where its
line starts (``path:LINE``) and is read again when accessed, so a large file is not held in memory.
"""

from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from agents.config import WorkloadConfig
from agents.sources.document import (
    AgentDocuments,
    Document,
    LazyDocuments,
    WorkloadError,
    check_name,
    check_split,
    check_text,
    decode,
    split_every,
)
from agents.sources.places import DOMAIN, TEAM, Place, check_given, derived_topology, place_agent, topology_agents


def jsonl_files(paths: list[str]) -> list[Path]:
    """The files that ``workload.paths`` names, in order, without repeats.

    Raises:
        WorkloadError: an entry names nothing, or a glob or directory holds no file.
    """
    out: dict[Path, None] = {}
    for entry in paths:
        expanded = os.path.expanduser(entry)
        if any(c in expanded for c in "*?["):
            found = [Path(m) for m in sorted(glob.glob(expanded, recursive=True)) if Path(m).is_file()]
            if not found:
                raise WorkloadError(f"workload.paths: glob {entry!r} matches no file (from {os.getcwd()})")
        elif Path(expanded).is_dir():
            found = sorted(p for p in Path(expanded).rglob("*.jsonl")
                           if p.is_file() and not any(s.startswith(".") for s in p.relative_to(expanded).parts))
            if not found:
                raise WorkloadError(f"workload.paths: directory {entry!r} holds no *.jsonl file")
        elif Path(expanded).is_file():
            found = [Path(expanded)]
        else:
            raise WorkloadError(f"workload.paths: {entry!r}: no such file or directory (from {os.getcwd()})")
        out.update(dict.fromkeys(found))
    return list(out)


def _record(line: bytes, where: str) -> dict:
    text = decode(line, where)
    try:
        record = json.loads(text)
    except json.JSONDecodeError as e:
        raise WorkloadError(f"{where}: not valid JSON: {e.msg} (column {e.colno})") from None
    if not isinstance(record, dict):
        raise WorkloadError(f"{where}: a record must be a JSON object, got {type(record).__name__}")
    return record


@dataclass
class Scan:
    """What one pass over the files found.

    Attributes:
        files: the files, in order.
        refs: agent -> (file index, byte offset, line number) of each of its records, in order;
            only the agents asked for when the scan was limited to some.
        places: agent -> (domain, team, where first seen) read from the data (every agent
            considered: all, or those of the configured topology).
    """

    files: list[Path]
    refs: dict[str, list[tuple[int, int, int]]] = field(default_factory=dict)
    places: dict[str, Place] = field(default_factory=dict)


def _place(cfg: WorkloadConfig, record: dict, where: str) -> tuple[str, str]:
    names = []
    for setting, key, default in (("domain_field", cfg.domain_field, DOMAIN), ("team_field", cfg.team_field, TEAM)):
        if key is None:
            names.append(default)
        elif key not in record:
            raise WorkloadError(f"{where}: field {key!r} is missing (workload.{setting})")
        else:
            names.append(check_name(record[key], where, key))
    return names[0], names[1]


def scan(cfg: WorkloadConfig, keep: set[str] | None = None) -> Scan:
    """Read and check every record; keep the positions of the records of the agents in ``keep`` (all: None).

    Raises:
        WorkloadError: a missing file; a line that is not UTF-8 or not a JSON object; a record whose
            agent, text, team or domain field is missing or invalid; an agent in two teams or
            domains. The message names ``path:LINE`` and the field.
    """
    result = Scan(jsonl_files(list(cfg.paths or [])))
    # a configured topology: records of other agents are ignored (only their agent field is read)
    wanted = None if cfg.topology is None else set(topology_agents(cfg.topology))
    for index, path in enumerate(result.files):
        with path.open("rb") as f:
            offset = 0
            for number, line in enumerate(f, start=1):
                start, offset = offset, offset + len(line)
                if not line.strip():
                    continue
                where = f"{path}:{number}"
                record = _record(line, where)
                if cfg.agent_field not in record:
                    raise WorkloadError(f"{where}: field {cfg.agent_field!r} is missing (workload.agent_field)")
                if wanted is not None and str(record[cfg.agent_field]) not in wanted:
                    continue
                agent = check_name(record[cfg.agent_field], where, cfg.agent_field)
                check_text(record.get(cfg.text_field), where, cfg.text_field)
                place_agent(result.places, agent, *_place(cfg, record, where), where,
                            (cfg.domain_field, cfg.team_field))
                if keep is None or agent in keep:
                    result.refs.setdefault(agent, []).append((index, start, number))
    return result


def _check_against(cfg: WorkloadConfig, result: Scan) -> None:
    check_given(cfg.topology or {}, result.places, (cfg.domain_field, cfg.team_field),
                f"no record of {[str(p) for p in result.files]} has {cfg.agent_field}=<that name>")


def jsonl_topology(cfg: WorkloadConfig) -> dict[str, dict[str, list[str]]]:
    """The configured topology checked against the data, else the one the data defines."""
    result = scan(cfg, keep=set())
    if cfg.topology is not None:
        _check_against(cfg, result)
        return cfg.topology
    if not result.places:
        raise WorkloadError(f"workload.paths: no record in {[str(p) for p in result.files]}")
    return derived_topology(result.places)


class LineDocuments(LazyDocuments):
    """Records of JSONL files, each read again from its line when accessed."""

    def __init__(self, files: list[Path], refs: list[tuple[int, int, int]], text_field: str) -> None:
        self.files, self.refs, self.text_field = files, refs, text_field

    def __len__(self) -> int:
        return len(self.refs)

    def _load(self, index: int) -> Document:
        file, offset, number = self.refs[index]
        where = f"{self.files[file]}:{number}"
        with self.files[file].open("rb") as f:
            f.seek(offset)
            record = _record(f.readline(), where)
        return Document(check_text(record.get(self.text_field), where, self.text_field), where)


def jsonl_documents(cfg: WorkloadConfig, agent: str, result: Scan | None = None) -> AgentDocuments:
    """One agent's records, every ``held_out_every``-th held out (``result``: a scan that kept them)."""
    result = result or scan(cfg, keep={agent})
    train, held = split_every(result.refs.get(agent, []), cfg.held_out_every)
    return AgentDocuments(train=LineDocuments(result.files, train, cfg.text_field),
                          held_out=LineDocuments(result.files, held, cfg.text_field))


def check_jsonl(cfg: WorkloadConfig, agents: list[str]) -> list[str]:
    """Check every record once, the topology against the data, and every agent's split (empty: a message)."""
    result = scan(cfg, keep=set(agents))
    if cfg.topology is not None:
        _check_against(cfg, result)
    problems = []
    for agent in agents:
        docs = jsonl_documents(cfg, agent, result)
        problem = check_split(agent, docs.train, docs.held_out, cfg.held_out_every, "records")
        if problem:
            problems.append(problem)
    return problems
