"""``code``: source code this project installs, as a hierarchy: domains are languages, teams projects,
agents parts of a project.

An agent's name is a dotted path under its language's root, in the running interpreter's
``site-packages`` (the project's virtualenv; nothing is downloaded):

- domain ``python``: root ``site-packages``, files ``*.py``; ``sympy.polys`` is
  ``site-packages/sympy/polys``;
- domain ``cpp``: root ``site-packages/torch/include`` (the C++ headers torch ships), files ``*.h``,
  ``*.hpp``, ``*.cuh``; ``ATen.native`` is ``torch/include/ATen/native``.

An agent reads its directory recursively: files of its language of at least ``MIN_BYTES``, none
under a ``test``/``tests``/``testing`` directory, sorted by path, every ``held_out_every``-th held
out. Two agents may not overlap (one inside the other), so no file is in two agents. The base
of ``swarm pretrain-base`` is pre-trained on the standard library, which is outside
``site-packages``: no file of this workload is in its corpus (``code_files`` paths are all under
``site_packages()``; tests check it on the shipped topology).

Without ``workload.topology`` the topology is :data:`DEFAULT_TOPOLOGY` (8 agents, 4 teams, 2
languages); a configured one may name any installed parts.
"""

from __future__ import annotations

import os
import sysconfig
from pathlib import Path

from agents.config import WorkloadConfig
from agents.sources.document import AgentDocuments, FileDocuments, WorkloadError, check_file_split, split_every

MIN_BYTES = 2048  # smaller files are mostly __init__ stubs and one-line forwarding headers
EXCLUDED_DIRS = frozenset({"test", "tests", "testing", "__pycache__"})
# language (domain) -> (root below site-packages, file suffixes)
LANGUAGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "python": ("", (".py",)),
    "cpp": ("torch/include", (".h", ".hpp", ".cuh")),
}
DEFAULT_TOPOLOGY: dict[str, dict[str, list[str]]] = {
    "python": {"transformers": ["transformers.generation", "transformers.pipelines"],
               "sympy": ["sympy.polys", "sympy.core"]},
    "cpp": {"aten": ["ATen.native", "ATen.core"],
            "c10": ["c10.util", "c10.core"]},
}


def site_packages() -> Path:
    """The running interpreter's ``site-packages`` (purelib): the project's virtualenv when run from it."""
    return Path(sysconfig.get_paths()["purelib"])


def agent_dir(domain: str, agent: str, root: Path | None = None) -> Path:
    """The directory of agent ``agent`` of language ``domain`` (not checked to exist).

    Raises:
        WorkloadError: ``domain`` is not a known language, or ``agent`` is not a dotted path.
    """
    if domain not in LANGUAGES:
        raise WorkloadError(f"workload.topology: domain {domain!r} is not a language of the code kind "
                            f"(known: {sorted(LANGUAGES)})")
    parts = agent.split(".")
    if not all(parts) or any(p.startswith(".") or "/" in p or "\\" in p for p in parts):
        raise WorkloadError(f"workload.topology: agent {agent!r} (domain {domain}) is not a dotted path "
                            "such as sympy.polys")
    base = (root or site_packages()) / LANGUAGES[domain][0]
    return base.joinpath(*parts)


def code_files(domain: str, agent: str, root: Path | None = None) -> list[Path]:
    """The sorted files of one agent (see the module docstring).

    Raises:
        WorkloadError: the directory is missing (the package is not installed) or holds no usable file.
    """
    folder = agent_dir(domain, agent, root)
    suffixes = LANGUAGES[domain][1]
    if not folder.is_dir():
        raise WorkloadError(f"workload code: agent {agent!r} (domain {domain}): no directory {folder}; "
                            f"is the package installed in this environment ({site_packages()})?")
    found = []
    for parent, dirs, names in os.walk(folder):  # followlinks=False
        dirs[:] = sorted(d for d in dirs if d not in EXCLUDED_DIRS and not d.startswith("."))
        found += [Path(parent) / n for n in names if n.endswith(suffixes) and not n.startswith(".")]
    files = sorted(p for p in found if p.is_file() and p.stat().st_size >= MIN_BYTES)
    if not files:
        raise WorkloadError(f"workload code: agent {agent!r} (domain {domain}): {folder} holds no "
                            f"{'/'.join(suffixes)} file of at least {MIN_BYTES} bytes")
    return files


def _domain_of(cfg: WorkloadConfig, agent: str) -> str:
    for domain, teams in code_topology(cfg).items():
        if any(agent in agents for agents in teams.values()):
            return domain
    raise WorkloadError(f"workload code: agent {agent!r} is not in the topology {code_topology(cfg)}")


def code_topology(cfg: WorkloadConfig) -> dict[str, dict[str, list[str]]]:
    """``cfg.topology`` (or :data:`DEFAULT_TOPOLOGY`), checked: every domain a known language, every
    agent a dotted path, and no agent inside another (no file read twice). Installation is checked by
    :func:`check_code`.

    Raises:
        WorkloadError: an unknown language, a malformed agent name, or two overlapping agents.
    """
    topology = cfg.topology if cfg.topology is not None else DEFAULT_TOPOLOGY
    places = [(d, a, agent_dir(d, a, Path("/"))) for d, teams in topology.items() for agents in teams.values()
              for a in agents]
    for i, (d1, a1, p1) in enumerate(places):
        for d2, a2, p2 in places[i + 1:]:
            if p1 == p2 or p1 in p2.parents or p2 in p1.parents:
                raise WorkloadError(f"workload.topology: agents {a1!r} ({d1}) and {a2!r} ({d2}) overlap (one "
                                    "directory holds the other), so their files would not be disjoint")
    return topology


def code_documents(cfg: WorkloadConfig, agent: str, domain: str | None = None) -> AgentDocuments:
    """One agent's files, every ``held_out_every``-th held out; each file is read when accessed.
    ``domain``: the agent's language (default: the topology's; an agent outside the topology, one that
    joins a running swarm or an experiment's joiner or switch package, reads its team's language)."""
    train, held = split_every(code_files(domain or _domain_of(cfg, agent), agent), cfg.held_out_every)
    return AgentDocuments(train=FileDocuments(train), held_out=FileDocuments(held))


def check_code(cfg: WorkloadConfig, agents: list[str]) -> list[str]:
    """Read and decode every file of every agent; the agents whose split is empty, as messages.

    Raises:
        WorkloadError: a package is missing or a file is not UTF-8 (first one found).
    """
    problems = []
    for agent in agents:
        docs = code_documents(cfg, agent)
        problem = check_file_split(agent, docs, cfg.held_out_every, "files")
        if problem:
            problems.append(problem)
    return problems
