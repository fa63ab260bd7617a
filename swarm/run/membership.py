"""Membership of a running swarm: agents join and leave a team between chunks (``swarm agents``, RPCs).

Requests come from two places and are applied by one path, :meth:`Membership.poll`, which the driver
calls between chunks: the run directory (``swarm agents add/remove``:
:meth:`swarm.rundir.RunDir.submit_member_request`) and the run's :class:`swarm.api.membership.MembershipBoard`
(the AddAgent/RemoveAgent RPCs). Each gets an answer: ``ok``, or ``code`` and ``reason``
(codes: :mod:`swarm.api.membership`).

Add ``NAME`` to team ``T``: refused for a malformed name, an unknown team, a name that is a member
already, or documents the workload cannot produce (``data``: the agent reads those files, as a
``files`` workload of its own; else the run's workload is asked for ``NAME``'s documents as if
``NAME`` were in its topology). Then the team server counts it (``add_member``: its quorum and the
windows above adapt), and it is launched in an actor (or agent host) of its own, named so that a
Ray restart rebuilds it as it is. Its worker pulls every shared level before its first step, so it
starts from the team's current shared levels; an agent that was a member before resumes from its
checkpoint (its store stays in the run directory).

Remove ``NAME``: refused for a non-member and for the last member of its team (its server would
starve). It is taken when the agent's actor or host is between chunks (never mid-chunk: nothing of
it is in flight); its team server drops it (``remove_member``: pushes the server acknowledged stay
merged, any later push from it is refused), then it is checkpointed and stopped. A push the agent
had computed but not sent stays in its checkpoint and goes out if it is added back.

Durability: every applied change is appended to ``members.jsonl``; ``swarm run --resume`` replays it,
so the resumed run has the same members (the config, and its hash, never change). ``status.json``
carries the history under ``members`` (time, op, agent, team).
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from typing import Any

import ray

from agents.sources import WorkloadError, documents_for
from agents.topology import AgentSpec
from cluster.actors import agent_actor
from cluster.host_actor import HOST_PREFIX, HostedAgent, agent_host, host_name
from swarm.api.membership import EVENT_KEEP, open_board


def files_workload(workload, spec: AgentSpec, data: list[str]):
    """``workload`` with the agent's documents from ``data`` (its own ``files`` workload; the batch shape,
    held-out split and seed stay the run's). ``ValueError`` for an empty entry."""
    return dataclasses.replace(workload, kind="files", files={spec.name: list(data)}, paths=None, path=None,
                               topology={spec.domain: {spec.swarm: [spec.name]}})


def _wait_gone(name: str, namespace: str, timeout_s: float = 30.0) -> None:
    """Wait until no actor is named ``name`` (a killed actor keeps its name for a moment)."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            ray.get_actor(name, namespace=namespace)
        except ValueError:
            return
        time.sleep(0.05)


class Membership:
    """The members of one :class:`swarm.run.driver.Run` and the changes asked of them (see the module doc)."""

    def __init__(self, run) -> None:
        self.run = run
        self.teams = {team: domain for domain, teams in run.cfg.workload.teams.items() for team in teams}
        self.members: dict[str, dict[str, Any]] = {  # agent id -> name, team, domain, data (None: the workload's)
            s.id: {"name": s.name, "team": s.swarm, "domain": s.domain, "data": None} for s in run.topology.agents}
        self.data: dict[str, list[str] | None] = {}  # agent id -> the data it was last added with
        self.history: list[dict[str, Any]] = []
        self.waiting: list[dict[str, Any]] = []  # removals waiting for their agent's chunk to end
        self.board = None
        self.events: list[dict[str, Any]] = []  # the join/leave events, numbered here (Watch reads them on the board)
        self.incarnation: str | None = None  # the board's life the driver last restored
        self._hosts = itertools.count()

    # ------------------------------------------------------------------ launch and resume
    def replay(self) -> set[str]:
        """Apply ``members.jsonl`` to the roster (a resumed run); the ids of the agents that joined (the
        driver launches them with :meth:`launch_joined`)."""
        joined: set[str] = set()
        for change in self.run.rundir.read_members():
            aid = change["agent"]
            if change["op"] == "add":
                self.members[aid] = {k: change.get(k) for k in ("name", "team", "domain", "data")}
                self.data[aid] = change.get("data")
                joined.add(aid)
            else:
                self.members.pop(aid, None)
                joined.discard(aid)
            self.history.append({k: change[k] for k in ("time", "op", "agent", "team")})
        self.run.snap["members"] = list(self.history)
        return joined

    def launch_joined(self, joined: set[str]) -> None:
        """Launch the agents that joined before a resume, and have their team servers count them again
        (a server that recovered them from its journal refuses the duplicate: nothing changes)."""
        for aid in sorted(joined):
            m = self.members[aid]
            spec = AgentSpec(m["name"], m["team"], m["domain"])
            self._count(spec, "add_member")
            self._launch(spec, m["data"])
        for aid in {h["agent"] for h in self.history} - set(self.members):
            spec = self._spec_of(aid)
            if spec is not None and spec.swarm in self.teams:
                self._count(spec, "remove_member")

    def _count(self, spec: AgentSpec, method: str) -> None:
        """Replay one change on the agent's team server; a refusal (it recovered the change already) is fine."""
        try:
            ray.get(getattr(self._server(spec), method).remote(spec.id))
        except AttributeError:  # a server without membership: nothing to replay there
            pass

    def open_board(self) -> None:
        """Create the run's membership board with the current roster (the query service reads it)."""
        self.board = open_board(self.run.namespace, self._roster())

    def _roster(self) -> dict[str, dict[str, str]]:
        return {a: {k: m[k] for k in ("name", "team", "domain")} for a, m in self.members.items()}

    def _spec_of(self, aid: str) -> AgentSpec | None:
        parts = aid.split("/")
        return AgentSpec(parts[2], parts[1], parts[0]) if len(parts) == 3 else None

    def _server(self, spec: AgentSpec):
        return self.run.servers[self._route(spec)[self.run.topology.levels[0]]]

    def _route(self, spec: AgentSpec) -> dict[str, str]:
        """The agent's servers: those of its team (every team has a member in the run's topology)."""
        sibling = next(s for s in self.run.topology.agents if s.swarm == spec.swarm)
        return self.run.topology.route(sibling.id)

    def _launch(self, spec: AgentSpec, data: list[str] | None) -> dict[str, Any]:
        """Start one agent in a unit of its own (an actor, or a host of one); its first record."""
        run, cfg = self.run, self.run.cfg
        workload = files_workload(cfg.workload, spec, data) if data else cfg.workload
        configs = {**run.agent_configs, "workload": workload}
        free = float(ray.available_resources().get("CPU", 0.0))
        cpus = min(run.agent_cpus, free)  # a share when one is free; else it shares what is there
        kwargs = {"namespace": run.namespace, "num_cpus": cpus, "configs": configs, "config_hash": run.hash,
                  "runtime": cfg.run, "threads": max(1, int(run.agent_cpus))}
        store = str(run.rundir.agent_store(spec.id))
        if cfg.run.per_host == 1:
            run.agents[spec.id] = agent_actor(spec, routes=self._route(spec), store_dir=store, **kwargs)
        else:  # a host of its own: Ray restarts it with these very arguments
            name = host_name(next(self._hosts), [spec.id]).replace(HOST_PREFIX, f"{HOST_PREFIX}joined-")
            host = agent_host(name, [spec], routes={spec.id: self._route(spec)}, stores={spec.id: store}, **kwargs)
            run.hosts[name], run.members[name] = host, [spec.id]
            run.agents[spec.id] = HostedAgent(host, spec.id)
        rec = ray.get(run.agents[spec.id].status.remote())
        run.snap["agents"][spec.id] = rec
        run.snap["start_steps"][spec.id] = rec["step"]
        return rec

    # ------------------------------------------------------------------ requests
    def poll(self, busy: set[str]) -> list[str]:
        """Take and apply the waiting requests; ``busy``: the units (hosts or agent actors) in a chunk now,
        whose agents cannot leave yet. Returns the units to submit a chunk to (the joined agents')."""
        requests = [(r, "dir") for r in self.run.rundir.take_member_requests()]
        if self.board is not None:
            try:
                taken, incarnation = ray.get(self.board.take.remote())
                if incarnation != self.incarnation:  # Ray restarted it with the launch roster: give it the
                    ray.get(self.board.restore.remote(self._roster(), self.events))  # current one back
                    self.incarnation = incarnation
            except ray.exceptions.RayActorError:  # restarting (or gone): its requests wait for the next poll
                taken = []
            requests += [(r, "board") for r in taken]
        waiting, self.waiting = self.waiting, []
        started: list[str] = []
        for req, via in [*[(w, w["_via"]) for w in waiting], *requests]:
            try:
                answer = self.apply(req, busy)
            except Exception as e:  # noqa: BLE001 - an answer, never a dead driver
                answer = self._no("server", f"{type(e).__name__}: {e}")
            if answer is None:  # its agent is in a chunk: taken again at the next poll
                self.waiting.append({**req, "_via": via})
                continue
            if answer.get("unit"):
                started.append(answer.pop("unit"))
            if via == "dir":
                self.run.rundir.answer_member_request(req.get("id", ""), answer)
            else:
                self.board.answer.remote(req.get("id", ""), answer)
        return started

    @staticmethod
    def _no(code: str, reason: str) -> dict[str, Any]:
        return {"ok": False, "code": code, "reason": reason}

    def apply(self, req: dict[str, Any], busy: set[str]) -> dict[str, Any] | None:
        """Apply one request (see the module doc): its answer, or None when it must wait for a chunk."""
        op, name = req.get("op"), str(req.get("name") or "")
        if op not in ("add", "remove"):
            return self._no("invalid", f"op: {op!r} is not add or remove")
        if not name or (op == "add" and "/" in name):
            return self._no("invalid", f"name: {name!r} is not an agent name (letters, digits, no '/')")
        return self._add(name, str(req.get("team") or ""), list(req.get("data") or [])) if op == "add" \
            else self._remove(name, busy)

    def _add(self, name: str, team: str, data: list[str]) -> dict[str, Any]:
        if team not in self.teams:
            return self._no("unknown_team", f"team: no team {team!r} in this run (teams: {', '.join(self.teams)})")
        same = [a for a, m in self.members.items() if m["name"] == name]
        if same:
            return self._no("duplicate", f"name: {name!r} is a member already ({same[0]})")
        spec = AgentSpec(name, team, self.teams[team])
        data = data or self.data.get(spec.id) or []
        try:
            workload = files_workload(self.run.cfg.workload, spec, data) if data else self.run.cfg.workload
            documents_for(workload, spec)
        except (WorkloadError, ValueError, OSError) as e:
            hint = "" if data else f" (the run's workload, kind {self.run.cfg.workload.kind}; give --data PATHS)"
            return self._no("no_data", f"no documents for {name!r}{hint}: {e}")
        server = self._server(spec)
        try:
            joined = ray.get(server.add_member.remote(spec.id))
        except AttributeError:
            return self._no("server", f"{self._route(spec)[self.run.topology.levels[0]]} has no membership "
                                      "(add_member)")
        if not joined.get("ok"):
            return self._no("server", f"team server: {joined.get('reason') or joined.get('code')}")
        try:
            rec = self._launch(spec, data or None)
        except Exception as e:  # noqa: BLE001 - undo the server's count, then answer
            ray.get(server.remove_member.remote(spec.id))
            return self._no("server", f"could not start {spec.id}: {type(e).__name__}: {e}")
        self.members[spec.id] = {"name": name, "team": team, "domain": spec.domain, "data": data or None}
        self.data[spec.id] = data or None
        how = f"resumed from its checkpoint at step {rec['step']}" if rec["step"] else \
            f"starting from the team's shared levels at version {joined.get('version', 0)}"
        unit = next((u for u, ids in self.run.members.items() if ids == [spec.id]), spec.id)
        return {**self._record("add", spec, joined, data or None), "unit": unit,
                "reason": f"{spec.id} joined ({joined.get('children')} members of team {team}); {how}"}

    def _remove(self, name: str, busy: set[str]) -> dict[str, Any] | None:
        aid = name if name in self.members else next((a for a, m in self.members.items() if m["name"] == name), None)
        if aid is None:
            return self._no("unknown_agent", f"agent: {name!r} is not a member (members: {', '.join(self.members)})")
        m = self.members[aid]
        if sum(1 for x in self.members.values() if x["team"] == m["team"]) == 1:
            return self._no("last_member", f"{aid} is the last member of team {m['team']}: its server would have "
                                           "no pushes to merge (add another member first)")
        unit = next((u for u, ids in self.run.members.items() if aid in ids), aid)
        if unit in busy:
            return None
        spec = AgentSpec(m["name"], m["team"], m["domain"])
        left = ray.get(self._server(spec).remove_member.remote(aid))
        if not left.get("ok"):
            return self._no("server", f"team server: {left.get('reason') or left.get('code')}")
        run = self.run
        step = ray.get(run.agents[aid].checkpoint.remote())
        if run.hosts and len(run.members[unit]) > 1:
            ray.get(run.hosts[unit].remove_agent.remote(aid))
            run.members[unit].remove(aid)
        else:
            ray.kill(run.hosts.pop(unit) if run.hosts else run.agents[aid], no_restart=True)
            run.members.pop(unit, None)
            if not run.hosts:  # its actor's name (agent/<id>) must be free before it can be added back
                _wait_gone(f"agent/{aid}", run.namespace)
        run.agents.pop(aid)
        run.snap["agents"].pop(aid, None)
        run.snap["start_steps"].pop(aid, None)
        del self.members[aid]
        return {**self._record("remove", spec, left, m["data"]),
                "reason": f"{aid} left team {m['team']} ({left.get('children')} members left); checkpointed at "
                          f"step {step} in {run.rundir.agent_store(aid)} (add it back to resume)"}

    def _record(self, op: str, spec: AgentSpec, server: dict[str, Any], data) -> dict[str, Any]:
        """Log an applied change (members.jsonl, status.json, the board); the answer's common fields."""
        now = time.time()
        self.run.rundir.log_member({"time": now, "op": op, "agent": spec.id, "name": spec.name, "team": spec.swarm,
                                    "domain": spec.domain, "data": data})
        self.history.append({"time": now, "op": op, "agent": spec.id, "team": spec.swarm})
        self.run.snap["members"] = list(self.history)
        if self.board is not None:
            # numbered here, the one record of the events: a board Ray restarted gets them all back at
            # the next poll (restore), so a call lost while it restarts loses nothing
            event = {"seq": (self.events[-1]["seq"] if self.events else 0) + 1, "kind": "join" if op == "add"
                     else "leave", "agent": spec.id, "time": now, "team": spec.swarm}
            self.events = [*self.events[-(EVENT_KEEP - 1):], event]
            self.board.changed.remote(event, {"name": spec.name, "team": spec.swarm, "domain": spec.domain})
        return {"ok": True, "code": None, "op": op, "agent": spec.id, "team": spec.swarm, "time": now,
                "children": server.get("children"), "version": server.get("version")}
