"""The agent-side sections of the config: ``model``, ``workload``, ``agent``, ``cache``.

Schemas only: importing this module loads neither torch nor transformers.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from layers.config import DTYPE_NAMES, check_fields

ARCHS = ("llama", "gpt2", "gpt_neox")
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")  # what ``agent.device`` accepts


@dataclass
class ModelConfig:
    """The frozen base model (the ``model`` config group).

    Attributes:
        name_or_path: a local HF checkpoint directory; when set, the fields below
            except ``dtype`` are ignored. ``None`` builds a fresh model from them.
        arch: family of the built model: llama, gpt2 or gpt_neox.
        vocab_size: 256 for the byte-level tokenizer.
        hidden_size, num_layers, num_heads, intermediate_size, max_positions: shape.
        seed: initialisation seed of a built model (same seed, same weights).
        dtype: parameter dtype.
    """

    name_or_path: str | None = None
    arch: str = "llama"
    vocab_size: int = 256
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 688
    max_positions: int = 1024
    seed: int = 0
    dtype: str = "float32"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first invalid field."""
        if self.arch not in ARCHS:
            raise ValueError(f"model.arch: {self.arch!r} is not one of {list(ARCHS)}")
        if self.dtype not in DTYPE_NAMES:
            raise ValueError(f"model.dtype: {self.dtype!r} is not one of {list(DTYPE_NAMES)}")
        for key in ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size", "max_positions"):
            if getattr(self, key) < 1:
                raise ValueError(f"model.{key}: must be >= 1, got {getattr(self, key)}")
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"model.hidden_size ({self.hidden_size}) must be divisible by model.num_heads ({self.num_heads})"
            )


def _default_topology() -> dict[str, dict[str, list[str]]]:
    return {"python": {"text": ["json", "email"], "net": ["http", "urllib"]}}


KINDS = ("stdlib", "synthetic", "code", "files", "jsonl", "dataset")
DATA_KINDS = ("code", "files", "jsonl", "dataset")  # kinds whose topology the data can define
PARTITIONS = ("key", "iid", "dirichlet")


@dataclass
class WorkloadConfig:
    """The ``workload`` config group: where each agent's documents come from (``agents/sources/``, docs/data.md).

    Attributes:
        kind: ``stdlib`` (stdlib packages), ``synthetic`` (generated streams), ``code`` (source code
            installed in the environment: languages, projects, their parts), ``files`` (the
            user's folders or globs), ``jsonl`` (JSON Lines records), ``dataset`` (a
            ``save_to_disk`` directory or Parquet files).
        topology: domain -> swarm (team) -> agent names. None: stdlib/synthetic use two teams of
            two stdlib names (json, email; http, urllib); files/jsonl/dataset read it from the
            data when the config is loaded (``agents.sources.topology_of``).
        files: ``files``: agent -> directories, files or glob patterns.
        paths: ``jsonl``: files, directories or globs of JSON Lines files.
        path: ``dataset``: a ``save_to_disk`` directory, a Parquet file, directory or glob.
        text_field: ``jsonl``/``dataset``: the field or column of the text.
        agent_field: ``jsonl``: the field that names a record's agent.
        team_field, domain_field: ``jsonl``/``dataset`` (partition ``key``): the fields that place
            each agent in a team and a domain when the data defines the topology (None: one
            team ``team`` in one domain ``data``).
        partition: ``dataset``: ``key`` (a value of ``partition_field`` is an agent), ``iid``,
            or ``dirichlet`` (label shares per agent; needs ``partition_field`` and ``alpha``).
            ``iid`` and ``dirichlet`` need ``topology``.
        partition_field: ``dataset``: the key column (``key``) or the label column (``dirichlet``).
        alpha: ``dirichlet`` concentration (> 0): small, few labels per agent; large, near IID.
        held_out_every: every n-th document of an agent is held out (all kinds but synthetic).
        steps_per_context: agent steps on one context before its boundary.
        batch_size, seq_len: windows of tokens per step.
        eval_windows: held-out windows per evaluation.
        seed: data seed (also of the ``iid``/``dirichlet`` partitions).
    """

    kind: str = "stdlib"
    # None: the built-in topology (a default dict would be *merged* with a YAML one by OmegaConf)
    topology: dict[str, dict[str, list[str]]] | None = None
    files: dict[str, list[str]] | None = None
    paths: list[str] | None = None
    path: str | None = None
    text_field: str = "text"
    agent_field: str = "agent"
    team_field: str | None = None
    domain_field: str | None = None
    partition: str = "key"
    partition_field: str | None = None
    alpha: float = 0.5
    held_out_every: int = 5
    steps_per_context: int = 20
    batch_size: int = 8
    seq_len: int = 128
    eval_windows: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"workload.kind: {self.kind!r} is not one of {list(KINDS)}")
        self._check_source()
        if self.topology is not None or self.kind not in DATA_KINDS:
            names = [a for swarms in self.teams.values() for agents in swarms.values() for a in agents]
            if not names:
                raise ValueError("workload.topology: no agents")
            if len(set(names)) != len(names):
                raise ValueError(f"workload.topology: an agent appears twice in {names}")
        check_fields("workload", self, held_out_every=self.held_out_every >= 2,
                     **{k: getattr(self, k) >= 1
                        for k in ("steps_per_context", "batch_size", "seq_len", "eval_windows")})

    def _check_source(self) -> None:
        """What the kind needs that can be checked without reading data."""
        for key in ("text_field", "agent_field", "team_field", "domain_field", "partition_field", "path"):
            if getattr(self, key) is not None and not getattr(self, key):
                raise ValueError(f"workload.{key}: must not be empty")
        if self.kind == "files":
            if not self.files:
                raise ValueError("workload.files: kind 'files' needs agent -> [directories or globs], "
                                 "e.g. workload.files='{notes: [~/notes]}'")
            empty = [agent for agent, entries in self.files.items() if not entries or not all(entries)]
            if empty:
                raise ValueError(f"workload.files: agent {empty[0]!r} has no (or an empty) directory or glob")
        elif self.kind == "jsonl" and (not self.paths or not all(self.paths)):
            raise ValueError("workload.paths: kind 'jsonl' needs a list of JSONL files, directories or globs, "
                             f"got {self.paths}")
        elif self.kind == "dataset":
            if not self.path:
                raise ValueError("workload.path: kind 'dataset' needs a save_to_disk directory or Parquet files")
            if self.partition not in PARTITIONS:
                raise ValueError(f"workload.partition: {self.partition!r} is not one of {list(PARTITIONS)}")
            if self.partition in ("key", "dirichlet") and not self.partition_field:
                what = "the column whose values name the agents" if self.partition == "key" else "the label column"
                raise ValueError(f"workload.partition_field: partition {self.partition!r} needs {what}")
            if self.partition in ("iid", "dirichlet") and self.topology is None:
                raise ValueError(f"workload.topology: partition {self.partition!r} gives one part per agent of "
                                 "the topology, so it needs one, e.g. workload.topology='{data: {team: [a, b]}}'")
        check_fields("workload", self, alpha=math.isfinite(self.alpha) and self.alpha > 0)

    @property
    def teams(self) -> dict[str, dict[str, list[str]]]:
        """The topology in use: domain -> swarm -> agents.

        Raises:
            ValueError: a files/jsonl/dataset workload whose topology the data has not yet given
                (the config loader sets it with ``agents.sources.topology_of``).
        """
        if self.topology is not None:
            return self.topology
        if self.kind in DATA_KINDS:
            raise ValueError(f"workload.topology: kind {self.kind!r} reads its topology from the data; "
                             "resolve it first with agents.sources.topology_of (load_config does)")
        return _default_topology()


@dataclass
class AgentConfig:
    """The ``agent`` section: local learning of the two fastest levels.

    Attributes:
        lr_context, lr_agent: step sizes of the normalised direction for each local level.
        beta1, beta2, eps: Adam moments of the shared gradient G.
        track_every: steps between circuit-tracker updates of the agent level (the context
            level is tracked every step).
        device: where the agent computes (docs/gpu.md): ``auto`` (CUDA when torch sees a GPU,
            else CPU; under Ray, when the cluster has GPUs), ``cpu``, ``cuda`` or ``cuda:N``.
            The frozen base runs there in ``model.dtype``; levels and optimizer state keep
            ``levels.dtype`` (float32 by default). Under Ray an agent on CUDA uses the GPU Ray
            assigns it (``cuda:N`` is for a plain ``Agent``). Resolved by ``agents.device``.
        gpus_per_agent: share of one GPU an agent actor asks Ray for when it runs on CUDA,
            in (0, 1]: 0.25 puts four agents on a GPU. Unused on CPU.
    """

    lr_context: float = 3e-3
    lr_agent: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    track_every: int = 5
    device: str = "cpu"
    gpus_per_agent: float = 0.25

    def __post_init__(self) -> None:
        check_fields("agent", self, **{k: math.isfinite(getattr(self, k)) and getattr(self, k) > 0
                                       for k in ("lr_context", "lr_agent", "eps")},
                     beta1=0 <= self.beta1 < 1, beta2=0 <= self.beta2 < 1, track_every=self.track_every >= 1)
        if not isinstance(self.device, str) or not DEVICE_PATTERN.fullmatch(self.device):
            raise ValueError(f"agent.device: {self.device!r} is not one of auto, cpu, cuda, cuda:N "
                             "(N the index of a GPU, e.g. cuda:0)")
        share = self.gpus_per_agent
        if isinstance(share, bool) or not isinstance(share, int | float) or not (math.isfinite(share)
                                                                                and 0 < share <= 1):
            raise ValueError(f"agent.gpus_per_agent: {share!r} is not a share of one GPU in (0, 1] "
                             "(0.25: four agents per GPU)")


@dataclass
class CacheConfig:
    """The ``cache`` section. Attributes:
        max_entries: bound of the cache (LRU beyond it).
        internalise_after: hits that make an entry due for internalisation.
        step_budget: training steps an internalisation may take before it counts as failed.
        check_every: steps between checks that greedy decoding reproduces the answer.
        lr: Adam step size of the agent level while internalising.
    """

    max_entries: int = 256
    internalise_after: int = 3
    step_budget: int = 60
    check_every: int = 5
    lr: float = 1e-2

    def __post_init__(self) -> None:
        check_fields("cache", self, max_entries=self.max_entries >= 1, internalise_after=self.internalise_after >= 1,
                     step_budget=self.step_budget >= 1, check_every=self.check_every >= 1,
                     lr=math.isfinite(self.lr) and self.lr > 0)
