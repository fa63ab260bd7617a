"""The ``experiment`` section: arms, seeds, scenarios and sweeps of ``swarm experiment``.

Every arm of a scenario gets the same compute: the same agents, agent steps, rank, data
seeds and evaluation windows. Seeds vary the data stream and the read projection P
(``workload.seed``, ``levels.seed``); the pre-trained base is the same for every seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from layers.config import check_fields

SCENARIOS = ("team", "join", "switch", "attack", "sweeps")
MAIN_ARMS = ["isolated", "fedavg", "hier_mean", "full"]
DATA_ATTACKS = ("poison",)  # swarm.experiment.attackers.DATA_ATTACKS (config validation needs no torch)


@dataclass
class JoinConfig:
    """Scenario (b): a new agent joins a trained team. Attributes:
        agent, team: the stdlib package that joins, and the team it joins.
        steps: the joiner's steps; eval_every: steps between its held-out evaluations.
        arms: arms measured (a cold agent, the ``isolated`` arm's joiner, is always measured).
    """

    agent: str = "wsgiref"
    team: str = "net"
    steps: int = 60
    eval_every: int = 5
    arms: list[str] = field(default_factory=lambda: list(MAIN_ARMS))

    def __post_init__(self) -> None:
        check_fields("experiment.join", self, steps=self.steps >= 1, eval_every=self.eval_every >= 1)


@dataclass
class SwitchConfig:
    """Scenario (c): after the team phase every agent switches to a new package (one each, in agent
    order) for ``steps`` steps; forgetting = bits per byte on its first package after minus before."""

    packages: list[str] = field(default_factory=lambda: ["re", "tkinter", "lib2to3", "distutils"])
    steps: int = 100
    arms: list[str] = field(default_factory=lambda: list(MAIN_ARMS))

    def __post_init__(self) -> None:
        check_fields("experiment.switch", self, steps=self.steps >= 1, packages=len(self.packages) >= 1)


def _attack_topology() -> dict[str, dict[str, list[str]]]:
    return {"python": {"text": ["json", "email", "re", "turtledemo", "tkinter"],
                       "net": ["http", "urllib", "wsgiref", "lib2to3", "distutils"]}}


@dataclass
class AttackConfig:
    """Scenario (d): a fraction of the agents are attackers (``swarm/experiment/attackers.py``). A crafted
    kind (``layers.merge.attacks.ATTACKS``): omniscient senders that see their server's honest pushes of
    the round and send crafted ones. ``poison``: members that follow the protocol but learn another
    domain's package (``poison_domain``, ``poison``; one each, in turn), e.g. C++ headers in a Python
    team. Attributes:
        topology: the agents (attackers replace the last agents of each team, alternating teams); a
            configured one replaces the default whole (``swarm.config.load.REPLACED_KEYS``).
        steps: honest agent steps per run.
        fractions: attacker fractions run with ``kind``; kinds: attacks run at ``kinds_fraction``.
        arms: arms compared (each also runs clean).
        poison_domain, poison: the poisoners' packages (of the workload's kind; ``code``: a language
            and dotted paths under it, docs/data.md).
    """

    # Optional only so that a configured topology can replace the default whole (load.REPLACED_KEYS)
    topology: dict[str, dict[str, list[str]]] | None = field(default_factory=_attack_topology)
    steps: int = 60
    kind: str = "alie"
    fractions: list[float] = field(default_factory=lambda: [0.1, 0.2, 0.4])
    kinds: list[str] = field(default_factory=lambda: ["sign_flip", "scaled", "gaussian"])
    kinds_fraction: float = 0.2
    arms: list[str] = field(default_factory=lambda: ["fedavg", "full"])
    poison_domain: str = "cpp"
    poison: list[str] = field(default_factory=lambda: ["ATen.native", "c10.util"])

    def __post_init__(self) -> None:
        from layers.merge.attacks import ATTACKS

        known = [*ATTACKS, *DATA_ATTACKS]
        bad = [k for k in [self.kind, *self.kinds] if k not in known]
        if bad:
            raise ValueError(f"experiment.attack: unknown attack {bad[0]!r}; known: {known}")
        check_fields("experiment.attack", self, steps=self.steps >= 1, topology=bool(self.topology),
                     fractions=all(0 < f < 0.5 for f in self.fractions),
                     kinds_fraction=0 < self.kinds_fraction < 0.5,
                     poison=len(self.poison) >= 1 or "poison" not in [self.kind, *self.kinds])


@dataclass
class SweepConfig:
    """The seed's open questions, swept on one arm. Attributes:
        arm, seeds: the arm swept and its seeds.
        traces: circuit trace-bank sizes K (the autocorrelation window reaches tau0 * ratio^(K-1)).
        phase: (theta_on, theta_off) pairs of the phase switch.
        switch_steps: lengths of the context switch (when does forgetting still happen).
        server_lr, server_lr_arms: the shared levels' step size, on these arms (where sharing helps).
    """

    arm: str = "full"
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    traces: list[int] = field(default_factory=lambda: [4, 8, 12])
    phase: list[list[float]] = field(default_factory=lambda: [[0.3, 0.1], [0.5, 0.2], [0.7, 0.4]])
    switch_steps: list[int] = field(default_factory=lambda: [50, 200])
    server_lr: list[float] = field(default_factory=lambda: [3e-4, 3e-3])
    server_lr_arms: list[str] = field(default_factory=lambda: ["full", "fedavg"])

    def __post_init__(self) -> None:
        check_fields("experiment.sweep", self, traces=all(k >= 2 for k in self.traces),
                     phase=all(len(p) == 2 and 0 <= p[1] < p[0] for p in self.phase),
                     switch_steps=all(s >= 1 for s in self.switch_steps), seeds=len(self.seeds) >= 1,
                     server_lr=all(lr > 0 for lr in self.server_lr))


@dataclass
class ExperimentConfig:
    """The ``experiment`` section. Attributes:
        seeds: seeds of every arm (mean +- std over them).
        steps: agent steps of the team phase (scenario a), per agent.
        arms: arms of the team scenario (``swarm.config.arms.ARMS``).
        scenarios: which of team, join, switch, attack, sweeps to run (join and switch continue
            from the team phase, so they need ``team``).
        eval_every: agent steps between the team phase's evaluations (learning curves).
        probe_every: agent steps between snapshots of every level (timescales, screened fraction).
        workers: processes running jobs side by side (None: one per CPU).
        out_dir, name: the run directory is ``out_dir/name`` (None: a timestamp).
        oracle_steps: the steps of an ``oracle_*`` arm's central learner (one per team, domain or for
            everyone, trained on the union of its agents' train files): ``agent``, ``steps``, the
            same steps and batch as one agent (its data diluted k-fold for a scope of k agents);
            ``scope``, ``k * steps``, the compute of its k agents together.
        headroom_factor: the headroom check's bar: team headroom >= this x its seed std.
        host: the agents of a run share ONE frozen base and step together (``cluster.host.AgentHost``:
            one forward and backward per round); False: one model per agent, stepped in turn.
        arm_overrides: arm -> config overrides applied to that arm's jobs only, after the arm's own
            (e.g. ``{full: [agent.lr_agent=1e-3]}``: the hierarchy's private levels at their own
            timescale). Every job file and the report list them.
    """

    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    steps: int = 150
    arms: list[str] = field(default_factory=lambda: list(MAIN_ARMS))
    scenarios: list[str] = field(default_factory=lambda: list(SCENARIOS))
    eval_every: int = 25
    probe_every: int = 5
    join: JoinConfig = field(default_factory=JoinConfig)
    switch: SwitchConfig = field(default_factory=SwitchConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    workers: int | None = None
    out_dir: str = "runs/experiments"
    name: str | None = None
    oracle_steps: str = "agent"
    headroom_factor: float = 5.0
    host: bool = True
    arm_overrides: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from swarm.config.arms import ARMS

        unknown = [a for a in [*self.arms, *self.join.arms, *self.switch.arms, *self.attack.arms, self.sweep.arm,
                                        *self.sweep.server_lr_arms]
                   if a not in ARMS]
        if unknown:
            raise ValueError(f"experiment: unknown arm {unknown[0]!r}; known: {sorted(ARMS)}")
        oracles = [a for a in [*self.join.arms, *self.switch.arms, *self.attack.arms, self.sweep.arm,
                               *self.sweep.server_lr_arms] if a.startswith("oracle_")]
        if oracles:
            raise ValueError(f"experiment: the oracle arm {oracles[0]!r} belongs in experiment.arms only (it is "
                             "the team scenario's ceiling, not a way to share that joins, switches or is attacked)")
        for arm, extra in self.arm_overrides.items():
            if arm not in ARMS:
                raise ValueError(f"experiment.arm_overrides: unknown arm {arm!r}; known: {sorted(ARMS)}")
            bad = [o for o in extra if not isinstance(o, str) or "=" not in o or o.startswith("experiment.")]
            if bad:
                raise ValueError(f"experiment.arm_overrides.{arm}: {bad[0]!r} is not a config override "
                                 "KEY=VALUE outside the experiment section")
        if self.oracle_steps not in ("agent", "scope"):
            raise ValueError(f"experiment.oracle_steps: {self.oracle_steps!r} is not one of ['agent', 'scope']")
        bad = [s for s in self.scenarios if s not in SCENARIOS]
        if bad:
            raise ValueError(f"experiment.scenarios: {bad[0]!r} is not one of {list(SCENARIOS)}")
        check_fields("experiment", self, seeds=len(self.seeds) >= 1 and len(set(self.seeds)) == len(self.seeds),
                     steps=self.steps >= 1, eval_every=self.eval_every >= 1, probe_every=self.probe_every >= 1,
                     workers=self.workers is None or self.workers >= 1, headroom_factor=self.headroom_factor > 0)
