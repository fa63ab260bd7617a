"""``swarm run``'s run: the level servers and agents of a topology on Ray, learning, with live progress
(the command around it, start or resume, drive and finish: :mod:`swarm.run.command`).

Without ``RAY_ADDRESS`` an embedded local Ray sized to the machine is started (and shut
down at the end); with it the run joins that cluster. Servers are created top-down
(foundation, domains, swarms), placed on a node with the ``swarm_head`` resource when
the cluster has one. Agents run in agent hosts (``run.agents_per_host``: K agents on one frozen
base per actor, :mod:`cluster.host_actor`; ``1``: one agent actor each), in chunks of ``run.chunk``
steps (forever with ``run.steps: null``); between chunks the driver records metrics (one record per
agent) and refreshes the display, and applies the membership requests waiting (``swarm agents
add/remove`` and the AddAgent/RemoveAgent RPCs: agents join and leave, :mod:`swarm.run.membership`;
a resume replays them from ``members.jsonl``). ``status.json`` carries ``ray_address``, the Ray GCS
address other processes join the run's cluster with.
Ctrl-C, SIGTERM and ``swarm stop`` let the chunks in flight finish (for a bounded grace),
checkpoint every agent and server, write the summary and print the resume command; a
second signal stops at once (:mod:`swarm.run.signals`). ``swarm run --resume RUN_DIR``
continues from those checkpoints (the run directory holds the resolved config; its layout
is owned by :mod:`swarm.rundir`). ``status.json`` carries the driver's heartbeat and
identity from the first second, so a run whose driver died is reported ``dead``.

Output: the startup phases as they happen, each with the seconds since the run began;
then, on a terminal, live tables redrawn every 2 s, and anywhere else (a pipe, a log file,
``--quiet``) a plain progress line whenever every agent finished another chunk (at most one
per 5 s); then the summary (:mod:`swarm.run.summary`).

Lifecycle: ``with Run.open(cfg, run_dir) as run:`` starts Ray when none is running,
launches the actors and opens the metrics log; ``run.drive()`` steps the agents,
``run.poll()`` refreshes the server statuses, ``run.finish()`` checkpoints and summarises;
leaving the block stops the actors (and the Ray this run started); a run left while its
status is still live (an error, a forced stop) is recorded ``aborted``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

import ray
from rich.console import Console
from rich.live import Live

from cluster.actors import agent_actor, agent_resources, level_server
from cluster.build import level_shapes, level_specs
from cluster.host_actor import HostedAgent, agent_host, host_count, host_groups, host_name, host_share
from cluster.topology import Topology
from swarm.config import SwarmConfig, config_hash
from swarm.ray_session import start_ray
from swarm.run.display import Heartbeat, LiveView, Snapshot, progress_line
from swarm.run.membership import Membership
from swarm.run.signals import STOP_COMMAND, STOP_GRACE_S, ForcedStop, StopSignals, describe
from swarm.run.summary import summarize
from swarm.rundir import LIVE_STATES, RunDir

HEAD_RESOURCE = "swarm_head"
LINE_EVERY_S = 5.0  # progress lines: at most one per this many seconds ...
HEARTBEAT_S = 60.0  # ... and one at least this often, even when no chunk completed


def agent_share(node_cpus: list[float], agents: int) -> float:
    """The largest CPU share <= 1 per agent such that ``agents`` of them fit on the nodes as they are
    (a share must fit whole on one node: 4 agents on 3 one-CPU nodes get 0.5, not 0.75)."""
    best = 0.0
    for c in node_cpus:
        for m in range(1, agents + 1):
            x = min(1.0, c / m)
            if x > best and sum(int(cc / x + 1e-9) for cc in node_cpus) >= agents:
                best = x
    return best or 1.0 / agents


class Run:
    """One run: its directory, config, actors and the driver loop. Use :meth:`open`."""

    def __init__(self, cfg: SwarmConfig, run_dir: str | Path | RunDir, console: Console | None = None,
                 signals: StopSignals | None = None) -> None:
        self.cfg = cfg
        self.rundir = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
        self.dir = self.rundir.path
        self.console = console or Console()
        self.namespace = self.rundir.namespace
        self.topology = Topology(cfg.workload, cfg.levels.names[2:])
        self.hash = config_hash(cfg)
        self.servers: dict[str, Any] = {}
        self.agents: dict[str, Any] = {}  # agent id -> its actor, or its HostedAgent view in a host
        self.hosts: dict[str, Any] = {}  # host name -> AgentHostActor (none with run.agents_per_host 1)
        self.members: dict[str, list[str]] = {}  # host name -> its agents' ids
        self.snap = Snapshot(self.rundir, cfg.run.steps)
        self._metrics: TextIO | None = None
        self.t0 = time.time()
        self.signals = signals or StopSignals()  # not installed unless given: a library caller keeps its handlers
        self.stop_grace_s = STOP_GRACE_S
        self.abandoned: list[str] = []  # agents killed because their chunk outlived the stop's grace
        self.membership = Membership(self)  # agents joining and leaving while it runs (swarm agents)
        self.agent_configs: dict[str, Any] = {}  # what an agent is built from (launch sets it)
        self.agent_cpus = 1.0  # the CPU share of one agent (of a host with run.agents_per_host)

    def phase(self, what: str) -> None:
        """Print a startup phase as it begins, with the seconds since the run object was made."""
        self.console.print(f"[{time.time() - self.t0:5.1f} s] {what}", highlight=False)

    @classmethod
    @contextmanager
    def open(cls, cfg: SwarmConfig, run_dir: str | Path | RunDir, console: Console | None = None,
             signals: StopSignals | None = None) -> Iterator[Run]:
        """A launched run: the run directory created with a ``starting`` status (heartbeat from here on),
        Ray joined or started (see :func:`start_ray`), the metrics log open for appending, every level
        server and agent actor up. ``signals``: the driver's installed :class:`StopSignals`, put back in
        place after ``ray.init`` (which replaces the SIGTERM handler). On leaving the block the actors
        are stopped, the log closed, a Ray started here shut down, and a status still live is recorded
        ``interrupted`` (a stop during startup) or ``aborted`` (anything else)."""
        run = cls(cfg, run_dir, console, signals)
        run.dir.mkdir(parents=True, exist_ok=True)
        run.rundir.take_stop_request()  # a request left over from an earlier driver is not for this one
        run.snap.write()
        try:
            with Heartbeat(run.snap):
                address = os.environ.get("RAY_ADDRESS")
                if not ray.is_initialized():
                    run.phase(f"joining the Ray cluster at {address}" if address else "starting a local Ray")
                started_ray = start_ray(run.namespace)
                if signals is not None:
                    signals.install()  # ray.init installed its own SIGTERM handler: ours wins
                try:
                    with open(run.rundir.metrics, "a") as run._metrics:
                        try:
                            run.launch()
                            yield run
                        finally:
                            run.stop_actors()
                finally:
                    if started_ray:
                        ray.shutdown()
        except BaseException as e:
            if run.snap["state"] in LIVE_STATES:  # KeyboardInterrupt: StopRequested, maybe as Ray re-raised it
                stopped = isinstance(e, KeyboardInterrupt) and run.signals.forced is None
                run.snap["state"] = "interrupted" if stopped else "aborted"
                run.snap["stopped_by"] = run.signals.reason
                if not isinstance(e, KeyboardInterrupt):
                    run.snap["error"] = f"{type(e).__name__}: {e}"
            raise
        finally:
            if run.snap["state"] in LIVE_STATES:  # left without finish(): no final checkpoint
                run.snap["state"] = "aborted"
            run.snap.pop("stopping", None)
            run.snap.write()

    # ------------------------------------------------------------------ launch
    def launch(self) -> None:
        """Create the level servers (parents first) and the agent actors, and record their first status."""
        cfg, shapes = self.cfg, level_shapes(self.cfg.model, self.cfg.levels)
        head = {HEAD_RESOURCE: 0.001} if any(HEAD_RESOURCE in n.get("Resources", {})
                                             for n in ray.nodes() if n.get("Alive")) else {}
        specs = level_specs(self.topology, server=cfg.server, merge=cfg.merge, dynamics=cfg.dynamics,
                            circuits=cfg.circuits, stores=self.rundir.level_store, config_hash=self.hash,
                            levels=cfg.levels)
        self.snap["ray_address"] = ray.get_runtime_context().gcs_address  # others join with it (the dashboard)
        self.phase(f"starting {len(specs)} level servers")
        for spec in specs:  # parents first: a server looks its parent up by name
            handle = level_server(spec, namespace=self.namespace, shapes=shapes, resources=head)
            self.snap["servers"][spec.name] = ray.get(handle.status.remote())
            self.servers[spec.name] = handle
        joined = self.membership.replay()  # a resumed run: the members it had (members.jsonl)
        original = [s for s in self.topology.agents if s.id in self.membership.members and s.id not in joined]
        n = len(original) + len(joined)
        node_cpus = [node["Resources"].get("CPU", 0) for node in ray.nodes() if node.get("Alive")]
        self.agent_configs = configs = {
            "model": cfg.model, "levels": cfg.levels, "workload": cfg.workload, "agent": cfg.agent,
            "dynamics": cfg.dynamics, "circuits": cfg.circuits, "cache": cfg.cache}
        if cfg.run.per_host == 1:  # one plain agent actor per agent, each with its own base
            cpus = self.agent_cpus = cfg.run.agent_cpus or agent_share(node_cpus, n)
            self.phase(f"building {n} agents ({cpus:.2g} CPU each): base model, data, first held-out evaluation")
            for spec in original:
                self.agents[spec.id] = agent_actor(spec, namespace=self.namespace, num_cpus=cpus, configs=configs,
                                                   routes=self.topology.route(spec.id),
                                                   store_dir=str(self.rundir.agent_store(spec.id)),
                                                   config_hash=self.hash, runtime=cfg.run, threads=max(1, int(cpus)))
        else:
            self._launch_hosts(configs, node_cpus, [s.id for s in original])
        self.membership.launch_joined(joined)
        self.membership.open_board()
        for aid, rec in zip(self.agents, ray.get([h.status.remote() for h in self.agents.values()]), strict=True):
            self.snap["agents"][aid] = rec
            self.snap["start_steps"][aid] = rec["step"]
        self.snap["ready"] = time.time()  # steps/s counts from here
        self.phase(f"{n} agents ready; " + progress_line(self.snap).partition(", ")[2])

    def _launch_hosts(self, configs: dict[str, Any], node_cpus: list[float], ids: list[str]) -> None:
        """The agents ``ids`` in hosts (``run.agents_per_host``): one frozen base per host, hosts spread over nodes."""
        cfg = self.cfg
        gpus = float(ray.cluster_resources().get("GPU", 0))
        cuda = agent_resources(configs, gpus)[1] > 0
        groups = host_groups(ids, host_count(len(ids), cfg.run.per_host, len(node_cpus), gpus, cuda))
        most = max(len(g) for g in groups)
        cpus = host_share(node_cpus, len(groups))
        if cfg.run.agent_cpus:  # a share per agent: a host asks for its agents' shares, as much as a node has
            cpus = min(cfg.run.agent_cpus * most, max(node_cpus, default=1.0))
        self.agent_cpus = cpus
        self.phase(f"building {len(ids)} agents in {len(groups)} host(s) of up to {most} ({cpus:.2g} CPU each): "
                   "one base per host, data, first held-out evaluation")
        specs = {s.id: s for s in self.topology.agents}
        for i, group in enumerate(groups):
            name = host_name(i, group)
            self.hosts[name] = agent_host(
                name, [specs[a] for a in group], namespace=self.namespace, num_cpus=cpus, configs=configs,
                routes={a: self.topology.route(a) for a in group},
                stores={a: str(self.rundir.agent_store(a)) for a in group}, config_hash=self.hash, runtime=cfg.run,
                threads=max(1, int(cpus)))
            self.members[name] = group
            self.agents.update({a: HostedAgent(self.hosts[name], a) for a in group})

    def units(self) -> dict[str, Any]:
        """What the driver steps: host name -> host, or (``run.agents_per_host`` 1) agent id -> agent actor."""
        return dict(self.hosts) if self.hosts else dict(self.agents)

    def _agents_of(self, unit: str) -> list[str]:
        return self.members.get(unit, [unit])

    # ------------------------------------------------------------------ drive
    def _log(self, record: dict[str, Any]) -> None:
        if self._metrics is not None:
            self._metrics.write(json.dumps({"time": round(time.time(), 3), **record}, default=str) + "\n")
            self._metrics.flush()

    def poll(self) -> None:
        """Refresh every level server's status in the snapshot and log it to ``metrics.jsonl``."""
        names = list(self.servers)
        for name, st in zip(names, ray.get([self.servers[n].status.remote() for n in names]), strict=True):
            self.snap["servers"][name] = st
            self._log({"kind": "server", **st})

    def drive(self, live: Live | None = None) -> bool:
        """Run every agent to ``run.steps`` (without end when it is None) or until a stop is asked (a signal,
        ``swarm stop``); True when every agent reached ``run.steps``. Once a stop is asked no chunk starts,
        and the chunks in flight get ``stop_grace_s`` to finish; agents still busy then are abandoned
        (killed: they resume from their last periodic checkpoint)."""
        steps, chunk = self.cfg.run.steps, self.cfg.run.chunk
        inflight: dict[Any, str] = {}

        def submit(unit: str) -> None:  # a host steps its agents together; one at its end sits out
            units = self.units()  # agents join and leave (self.membership)
            if unit not in units:
                return
            least = min(self.snap["agents"][a]["step"] for a in self._agents_of(unit))
            n = chunk if steps is None else min(chunk, steps - least)
            if n > 0 and self.signals.reason is None:
                handle = units[unit]  # a host steps the agents the driver counts as its members
                inflight[handle.run.remote(n, steps, self.members[unit]) if self.hosts else handle.run.remote(n)] = unit

        self._check_stop()
        for unit in self.units():
            submit(unit)
        self.snap["state"] = "running"
        self.signals.interruptible = False  # from here a first signal only asks; the loop below answers
        last_poll, last_line = 0.0, time.time()
        lined = min((r["step"] for r in self.snap["agents"].values()), default=0)  # no line before a chunk
        while inflight:
            try:
                done, _ = ray.wait(list(inflight), num_returns=1, timeout=1.0)
                ended = []
                for ref in done:
                    unit = inflight.pop(ref)
                    out = ray.get(ref)
                    for aid, rec in (out if self.hosts else {unit: out}).items():  # one row per agent
                        self.snap["agents"][aid] = rec
                        self._log({"kind": "agent", **rec})
                    ended.append(unit)
                if self.signals.reason is None:  # joins and leaves between chunks: the ended units are idle
                    ended += self.membership.poll(busy=set(inflight.values()))
                for unit in ended:
                    submit(unit)
            except KeyboardInterrupt as e:  # a forced stop (Ray re-raises it as a plain KeyboardInterrupt), or
                if self.signals.forced is not None:  # Python's own Ctrl-C handler: a Run used without StopSignals
                    raise ForcedStop(self.signals.forced) from e
                self.signals.request("SIGINT")
            if self._check_stop() and inflight and time.time() - self.snap["stopping"]["since"] > self.stop_grace_s:
                self._abandon(sorted(set(inflight.values())))
                inflight.clear()
            if time.time() - last_poll > 2.0 or not inflight:
                self.poll()
                self.snap.write()
                last_poll = time.time()
                if live is not None:
                    live.update(LiveView(self.snap))
                else:  # a line when every agent has done another chunk, or as a heartbeat
                    least = min(r["step"] for r in self.snap["agents"].values())
                    now = time.time()
                    if (least > lined and now - last_line >= LINE_EVERY_S) or now - last_line >= HEARTBEAT_S \
                            or not inflight:
                        self.console.print(progress_line(self.snap), highlight=False)
                        last_line, lined = now, least
        return self.signals.reason is None

    def _check_stop(self) -> bool:
        """True once a stop is asked: by a signal (:attr:`signals`) or ``swarm stop`` (the run directory's
        stop request, taken here). The first time, say so and record ``stopping`` in the snapshot."""
        if self.signals.reason is None and self.rundir.take_stop_request():
            self.signals.request(STOP_COMMAND)
        reason = self.signals.reason
        if reason is None:
            return False
        if "stopping" not in self.snap:
            self.snap["stopping"] = {"by": reason, "since": time.time()}
            again = "" if reason == STOP_COMMAND else \
                f" ({describe(reason)} again stops at once, without the final checkpoint)"
            self.console.print(f"[yellow]{describe(reason)}: finishing the steps in flight (at most "
                               f"{self.stop_grace_s:.0f} s), then checkpointing every agent and server{again}"
                               "[/yellow]", highlight=False)
        return True

    def _abandon(self, units: list[str]) -> None:
        """Kill the agents (or hosts) whose chunk outlived the stop's grace; their agents resume from their
        last checkpoints."""
        agents = [a for u in units for a in self._agents_of(u)]
        self.console.print(f"[yellow]{', '.join(agents)}: still in a chunk after {self.stop_grace_s:.0f} s; "
                           "abandoned (they resume from their last periodic checkpoint)[/yellow]", highlight=False)
        for unit in units:
            ray.kill(self.hosts.pop(unit) if self.hosts else self.agents[unit], no_restart=True)
            self.members.pop(unit, None)
        for aid in agents:
            self.agents.pop(aid)
            self.snap["agents"][aid] = {**self.snap["agents"][aid], "abandoned": True}
            self.abandoned.append(aid)

    def checkpoint(self) -> None:
        """Checkpoint every (not abandoned) agent, then every server (so the children's last forwards are in)."""
        ray.get([h.checkpoint.remote() for h in self.units().values()])  # a host checkpoints each of its agents
        ray.get([h.checkpoint.remote() for h in self.servers.values()])  # children's last forwards are in

    def finish(self, completed: bool) -> dict[str, Any]:
        """Checkpoint, record the final state in ``status.json`` (``finished``; ``stopped`` after ``swarm
        stop``; else ``interrupted``) and ``stopped_by``, write and return the summary (without agents
        when every agent was abandoned: nothing to evaluate)."""
        self.checkpoint()
        self.poll()
        reason = None if completed else self.signals.reason
        self.snap.pop("stopping", None)
        self.snap["state"] = "finished" if completed else "stopped" if reason == STOP_COMMAND else "interrupted"
        self.snap["stopped_by"] = reason
        self.snap.write()
        if not self.agents:
            return {"run_dir": str(self.dir), "state": self.snap["state"], "stopped_by": reason, "agents": [],
                    "abandoned": self.abandoned}
        return summarize(self)

    def stop_actors(self) -> None:
        """Kill every actor of the run (no restart): their state is in their last checkpoints."""
        board = [self.membership.board] if self.membership.board is not None else []
        for h in [*self.units().values(), *self.servers.values(), *board]:
            ray.kill(h, no_restart=True)
