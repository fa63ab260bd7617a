"""``files``: each agent reads its own folders or glob patterns; one context per file.

``workload.files`` maps an agent to a list of entries. An entry is:

- a directory: walked recursively for *text files* (below);
- a glob pattern (``*``, ``?``, ``[``; ``**`` crosses directories): its matching files that are
  text files, and the text files of its matching directories;
- a file path: taken as named; it must be a non-empty UTF-8 text file.

A *text file*, when found by walking or by a glob: not hidden (no path part below the entry
starts with ``.``, so ``.git`` is skipped), not empty, and no NUL byte in its first 8 KiB (that
skips images, PDFs, archives and UTF-16 files). Anything else that is not UTF-8 (a Latin-1
text, say) is an error naming the file and the byte offset, not silently skipped: the user
chose the folder and should know that a file is left out. Symlinked directories are not
followed (no cycles); symlinked files are read. ``~`` is expanded; relative paths are relative
to the working directory.

An agent's files are de-duplicated and sorted by path; every ``held_out_every``-th is held out.
Without a configured topology, every agent of ``workload.files`` is in one team, ``team``, of one
domain, ``files``, in the order ``workload.files`` lists them.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

from agents.config import WorkloadConfig
from agents.sources.document import AgentDocuments, FileDocuments, WorkloadError, check_file_split, split_every

SNIFF_BYTES = 8192
DOMAIN, TEAM = "files", "team"


def _is_glob(entry: str) -> bool:
    return any(c in entry for c in "*?[")


def _is_text_file(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            head = f.read(SNIFF_BYTES)
    except OSError:
        return False
    return bool(head) and b"\x00" not in head


def _walk(root: Path) -> list[Path]:
    found = []
    for folder, dirs, names in os.walk(root):  # followlinks=False: a symlinked directory is not entered
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [Path(folder) / n for n in names if not n.startswith(".")]
    return [p for p in found if p.is_file() and _is_text_file(p)]


def agent_files(agent: str, entries: list[str]) -> list[Path]:
    """The sorted, de-duplicated files of one agent's entries (see the module docstring).

    Raises:
        WorkloadError: an entry names nothing that exists, a glob matches no text file, a named file
            is empty or binary; the message names ``workload.files.<agent>`` and the entry.
    """
    where = f"workload.files.{agent}"
    files: set[Path] = set()
    for entry in entries:
        expanded = os.path.expanduser(entry)
        if _is_glob(expanded):
            matches = sorted(glob.glob(expanded, recursive=True))
            found = [p for m in matches for p in (_walk(Path(m)) if Path(m).is_dir() else [Path(m)])
                     if p.is_file() and _is_text_file(p)]
            if not found:
                what = "matches nothing" if not matches else f"matches {len(matches)} paths but no text file"
                raise WorkloadError(f"{where}: glob {entry!r} {what} (from {os.getcwd()})")
        elif Path(expanded).is_dir():
            found = _walk(Path(expanded))
            if not found:
                raise WorkloadError(f"{where}: directory {entry!r} holds no text file (hidden, empty and "
                                    "binary files are skipped)")
        elif Path(expanded).is_file():
            path = Path(expanded)
            if path.stat().st_size == 0:
                raise WorkloadError(f"{where}: file {entry!r} is empty")
            if not _is_text_file(path):
                raise WorkloadError(f"{where}: file {entry!r} is binary (a NUL byte in its first "
                                    f"{SNIFF_BYTES} bytes), not text")
            found = [path]
        else:
            raise WorkloadError(f"{where}: {entry!r}: no such file or directory (from {os.getcwd()})")
        files.update(found)
    return sorted(files)


def _entries(cfg: WorkloadConfig, agent: str) -> list[str]:
    files = cfg.files or {}
    if agent not in files:
        raise WorkloadError(f"workload.topology names agent {agent!r}, which workload.files lacks "
                            f"(it has {sorted(files)})")
    return list(files[agent])


def files_topology(cfg: WorkloadConfig) -> dict[str, dict[str, list[str]]]:
    """``cfg.topology`` checked against ``workload.files`` (agents not in it are ignored), else
    ``{"files": {"team": [every agent of workload.files]}}``.

    Raises:
        WorkloadError: the topology names an agent that ``workload.files`` lacks.
    """
    if cfg.topology is None:
        return {DOMAIN: {TEAM: list(cfg.files or {})}}
    for teams in cfg.topology.values():
        for agents in teams.values():
            for agent in agents:
                _entries(cfg, agent)
    return cfg.topology


def files_documents(cfg: WorkloadConfig, agent: str) -> AgentDocuments:
    """One agent's files, split every ``held_out_every``-th; each file is read when accessed."""
    train, held = split_every(agent_files(agent, _entries(cfg, agent)), cfg.held_out_every)
    return AgentDocuments(train=FileDocuments(train), held_out=FileDocuments(held))


def check_files(cfg: WorkloadConfig, agents: list[str]) -> list[str]:
    """Read and decode every file of every agent; the agents whose split is empty, as messages.

    Raises:
        WorkloadError: an entry or a file cannot be used (first one found).
    """
    problems = []
    for agent in agents:
        docs = files_documents(cfg, agent)
        problem = check_file_split(agent, docs, cfg.held_out_every, "text files")
        if problem:
            problems.append(problem)
    return problems
