"""The whole configuration's schema: one dataclass per section, each owned by its package."""

from __future__ import annotations

from dataclasses import dataclass, field

from agents.config import AgentConfig, CacheConfig, ModelConfig, WorkloadConfig
from cluster.config import RuntimeConfig, ServerConfig
from layers.circuits.config import CircuitsConfig
from layers.config import LevelsConfig, check_fields
from layers.dynamics.config import DynamicsConfig
from layers.merge.config import MergeConfig
from swarm.config.absorb import AbsorbConfig
from swarm.config.experiment import ExperimentConfig
from swarm.config.learn import LearnConfig
from swarm.config.pretrain import PretrainConfig
from swarm.config.serve import ServeConfig


@dataclass
class DemoConfig:
    """The single-process demo (``swarm demo``): two fast levels learn a byte stream.

    Attributes:
        packages: stdlib packages whose source files form the stream (a file = a context).
        steps: optimizer steps in total.
        steps_per_context: steps on one file before the context boundary (context reset).
        batch_size, seq_len: windows of bytes per step.
        lr_context, lr_agent: AdamW learning rates of the two trained levels.
        eval_every: steps between held-out evaluations.
        eval_windows: held-out windows per evaluation.
        grow_by: rank added at the end to show function-preserving growth (0: skip).
        seed: data-sampling seed.
        out_dir: where metrics and the exported adapter go.
    """

    packages: list[str] = field(default_factory=lambda: ["json", "email"])
    steps: int = 300
    steps_per_context: int = 20
    batch_size: int = 8
    seq_len: int = 128
    lr_context: float = 3e-3
    lr_agent: float = 1e-3
    eval_every: int = 50
    eval_windows: int = 32
    grow_by: int = 8
    seed: int = 0
    out_dir: str = "runs/demo"

    def __post_init__(self) -> None:
        check_fields("demo", self, packages=len(self.packages) > 0, grow_by=self.grow_by >= 0,
                     **{k: getattr(self, k) >= 1
                        for k in ("steps", "steps_per_context", "batch_size", "seq_len", "eval_every", "eval_windows")},
                     **{k: getattr(self, k) > 0 for k in ("lr_context", "lr_agent")})


@dataclass
class SwarmConfig:
    """The whole resolved configuration."""

    model: ModelConfig = field(default_factory=ModelConfig)
    levels: LevelsConfig = field(default_factory=LevelsConfig)
    merge: MergeConfig = field(default_factory=MergeConfig)
    dynamics: DynamicsConfig = field(default_factory=DynamicsConfig)
    circuits: CircuitsConfig = field(default_factory=CircuitsConfig)
    workload: WorkloadConfig = field(default_factory=WorkloadConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    run: RuntimeConfig = field(default_factory=RuntimeConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    demo: DemoConfig = field(default_factory=DemoConfig)
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)
    absorb: AbsorbConfig = field(default_factory=AbsorbConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    learn: LearnConfig = field(default_factory=LearnConfig)


def check_growth(cfg: SwarmConfig) -> None:
    """Refuse (``ValueError`` naming the settings) automatic growth that could never fire. Checked when a run
    or an experiment's job starts, not on load: a run written before the check still resumes."""
    growth = cfg.levels.grow_after and cfg.levels.max_rank is not None
    temperature = cfg.dynamics.temperature
    if growth and not temperature.enabled:
        raise ValueError("levels.grow_after: automatic growth needs dynamics.temperature.enabled (a level "
                         "grows when its blocks crystallise, which the temperature measures)")
    if growth and cfg.server.step == "adam" and temperature.measure == "drive":
        raise ValueError("levels.grow_after: automatic growth under server.step=adam needs "
                         "dynamics.temperature.measure=gradient (heated by Adam's drive, no block ever "
                         "crystallises; docs/levels.md)")
