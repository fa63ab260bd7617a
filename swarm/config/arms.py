"""The arms of the experiments: what each changes relative to the full system.

An arm is a list of config overrides (the same syntax as the command line) plus two things
a config cannot say: which scope each shared level has (a flat level shared by everyone)
and whether its servers run the plain optimizer (FedAvg: ``B += lr * mean``, none of the
section-6 mechanisms on the server). Agents learn their own levels the same way in every arm, unless
``experiment.arm_overrides`` gives an arm its own settings (the report lists them).

The ``oracle_*`` arms are not ways to share but the ceilings sharing is measured against
(docs/experiments.md, headroom): one learner per team, domain or for everyone, with the isolated
arm's two local levels, trained centrally on the union of its scope's agents' train files; every
agent of the scope is evaluated with its scope's learner.

``flower_fedavg`` (``Arm.external``) is not run by our code at all: flat FedAvg of a PEFT LoRA through
Flower's own simulation engine in ``.venv-flower`` (``swarm/experiment/flower_arm.py``), the outside
anchor our ``fedavg`` arm is checked against; team scenario only.
"""

from __future__ import annotations

from dataclasses import dataclass

from layers.merge.config import AGGREGATOR_NAMES

NO_PROPOSALS = ("run.propose_every=1000000000", "server.propose_every=1000000000")  # no circuits reach a shared level
MECHANISMS = ("viscosity", "temperature", "phase", "consolidation", "mass", "sync", "homeostasis")  # DESIGN 6


@dataclass(frozen=True)
class Arm:
    name: str
    about: str
    overrides: tuple[str, ...] = ()
    scopes: tuple[str, ...] | None = None  # None: team, domain, all
    plain_servers: bool = False  # servers run with every section-6 mechanism off
    oracle: str | None = None  # team | domain | all: one central learner per scope instead of the agents
    external: str | None = None  # flower: run outside our code (swarm/experiment/flower_arm.py), team scenario only


def _mechanism_off(m: str) -> tuple[str, ...]:
    if m == "sync":  # push at a fixed interval, the gate's longest (same bytes on the wire, no coherence test)
        return ("dynamics.sync.enabled=false", "dynamics.sync.min_interval=${dynamics.sync.max_interval}")
    return (f"dynamics.{m}.enabled=false",)


FEDAVG_OVERRIDES = (  # fedavg and flower_fedavg: the same config (data, steps, push interval)
    "levels.names=[context,agent,shared]", "merge.aggregator=mean", *_mechanism_off("sync"), *NO_PROPOSALS)


def _arms() -> dict[str, Arm]:
    arms = [
        Arm("isolated", "each agent alone: only its context and agent levels", ("levels.names=[context,agent]",)),
        Arm("fedavg", "one flat shared LoRA level for everyone, merged by FedAvg (mean, plain server, "
                      "fixed-interval pushes, no circuits)",
            FEDAVG_OVERRIDES, scopes=("all",), plain_servers=True),
        Arm("flower_fedavg", "flat FedAvg of a PEFT LoRA (its own A) run by Flower's simulation engine, same "
                             "data and steps as fedavg (docs/experiments.md, the Flower anchor arm)",
            FEDAVG_OVERRIDES, scopes=("all",), plain_servers=True, external="flower"),
        Arm("hier_mean", "the hierarchy (team, domain, foundation) with mean merging and no promotion",
            ("merge.aggregator=mean", *NO_PROPOSALS)),
        Arm("full", "the full system: hierarchy, resonance, promotion, every section-6 mechanism"),
        Arm("no_promotion", "full, with promotion switched off everywhere", ("circuits.promote=false",)),
    ]
    arms += [Arm(f"oracle_{scope}", f"central oracle: one learner per {what} on the union of its agents' train "
                 "files (context + agent levels, nothing shared)", ("levels.names=[context,agent]",), oracle=scope)
             for scope, what in (("team", "team"), ("domain", "domain"), ("all", "everyone"))]
    arms += [Arm(f"no_{m}", f"full, with {m} switched off", _mechanism_off(m)) for m in MECHANISMS]
    arms += [Arm(f"agg_{a}", f"full, with resonance replaced by {a}", (f"merge.aggregator={a}",))
             for a in sorted(AGGREGATOR_NAMES) if a != "resonance"]
    return {a.name: a for a in arms}


ARMS: dict[str, Arm] = _arms()
ABLATIONS = ["no_promotion", *[f"no_{m}" for m in MECHANISMS]]
BASELINE_AGGREGATORS = [a for a in ARMS if a.startswith("agg_")]
ORACLES = ["oracle_team", "oracle_domain", "oracle_all"]
