"""One entry point per question, whatever the kind: which topology, which documents, is the data usable.

``documents_for`` runs in each agent's process; ``topology_of`` when the config is loaded;
``check_workload`` in the driver before anything starts. Torch-free; the ``dataset`` kind
imports pyarrow (and ``datasets`` for a saved dataset) only when it runs.
"""

from __future__ import annotations

from agents.config import WorkloadConfig
from agents.sources.code import check_code, code_documents, code_topology
from agents.sources.dataset import check_dataset, dataset_documents, dataset_topology
from agents.sources.document import AgentDocuments, WorkloadError, check_file_split, check_split
from agents.sources.files import check_files, files_documents, files_topology
from agents.sources.jsonl import check_jsonl, jsonl_documents, jsonl_topology
from agents.sources.places import topology_agents
from agents.sources.stdlib import stdlib_documents
from agents.sources.synthetic import synthetic_documents
from agents.topology import AgentSpec

UNITS = {"stdlib": "files", "code": "files", "files": "text files", "jsonl": "records", "dataset": "rows"}


def topology_of(cfg: WorkloadConfig) -> dict[str, dict[str, list[str]]]:
    """The topology in use (domain -> team -> agents).

    ``stdlib`` and ``synthetic``: ``cfg.teams`` (the configured one or the built-in default).
    ``code``: the configured one (or the built-in code topology), checked for languages and overlaps.
    ``files``, ``jsonl``, ``dataset``: the configured one, checked against the data (every agent
    it names has data), else the one the data defines (see each kind's module).

    Raises:
        WorkloadError: the data is missing or unusable, or the topology names an agent the data lacks.
    """
    if cfg.kind == "code":
        return code_topology(cfg)
    if cfg.kind == "files":
        return files_topology(cfg)
    if cfg.kind == "jsonl":
        return jsonl_topology(cfg)
    if cfg.kind == "dataset":
        return dataset_topology(cfg)
    return cfg.teams


def documents_for(cfg: WorkloadConfig, spec: AgentSpec) -> AgentDocuments:
    """One agent's train and held-out documents (train documents may be read when accessed).

    Raises:
        WorkloadError: its data is missing or unusable, or its train or held-out part is empty.
    """
    if cfg.kind == "synthetic":
        return synthetic_documents(spec, cfg.seed)
    if cfg.kind == "stdlib":
        docs = stdlib_documents([spec.name], cfg.held_out_every)
    elif cfg.kind == "code":
        docs = code_documents(cfg, spec.name, spec.domain)
    elif cfg.kind == "files":
        docs = files_documents(cfg, spec.name)
    elif cfg.kind == "jsonl":
        docs = jsonl_documents(cfg, spec.name)
    elif cfg.kind == "dataset":
        docs = dataset_documents(cfg, spec.name)
    else:
        raise WorkloadError(f"workload.kind: {cfg.kind!r} has no documents")
    problem = check_split(spec.name, docs.train, docs.held_out, cfg.held_out_every, UNITS[cfg.kind])
    if problem:
        raise WorkloadError(f"workload: {problem}")
    return docs


def _check_stdlib(cfg: WorkloadConfig, agents: list[str]) -> list[str]:
    problems = []
    for agent in agents:
        try:
            docs = stdlib_documents([agent], cfg.held_out_every)
        except WorkloadError as e:
            problems.append(f"agent {agent!r}: {e}")
            continue
        problem = check_file_split(agent, docs, cfg.held_out_every, "files")
        if problem:
            problems.append(problem)
    return problems


def check_workload(cfg: WorkloadConfig) -> None:
    """Check that every agent of the workload can run, before anything starts.

    Resolves the topology (:func:`topology_of`), reads every document of every agent once
    (``synthetic``: nothing to read) and checks that each agent's train and held-out parts are
    non-empty. Problems with a record or a file stop at the first one; agents whose parts are
    empty are all listed in one message.

    Raises:
        WorkloadError: naming the file, ``path:LINE`` or ``DIR[row N]``, and the field.
    """
    topology = topology_of(cfg)
    agents = topology_agents(topology)
    if not agents:
        raise WorkloadError("workload.topology: no agents")
    if cfg.kind == "synthetic":
        return
    checks = {"stdlib": _check_stdlib, "code": check_code, "files": check_files, "jsonl": check_jsonl,
              "dataset": check_dataset}
    problems = checks[cfg.kind](cfg, agents)
    if problems:
        lines = "\n  ".join(problems)
        raise WorkloadError(f"workload: {len(problems)} of {len(agents)} agents cannot run:\n  {lines}")
