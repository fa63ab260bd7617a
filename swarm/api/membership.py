"""Membership of a live run over Ray: the run's ``membership`` board, and the AddAgent/RemoveAgent RPCs.

The driver of ``swarm run`` owns one :class:`MembershipBoard` actor, named :data:`BOARD` in the run's
Ray namespace. It is the request queue of the query service (AddAgent and RemoveAgent put requests
there and wait for the answer) and the live roster every reader of the run follows (agent id ->
its name, team and domain), with the join and leave events ``Watch`` streams. The driver takes
the board's requests between chunks, together with those ``swarm agents`` leaves in the run
directory (:meth:`swarm.rundir.RunDir.submit_member_request`), and applies each the same way
(:mod:`swarm.run.membership`); the answer says ``ok`` or why not (``code``, ``reason``).

Answer codes and the gRPC status a refusal gets (:data:`STATUS_OF`): ``invalid`` (a malformed
request) INVALID_ARGUMENT; ``duplicate`` (the name is a member already) ALREADY_EXISTS;
``unknown_team``, ``unknown_agent`` NOT_FOUND; ``last_member`` (the team's server would starve),
``no_data`` (the workload cannot produce the agent's documents), ``server`` (its team server
refused) FAILED_PRECONDITION; ``timeout`` (the driver did not answer in time) DEADLINE_EXCEEDED.
The RPCs refuse a malformed request, an unknown team and a non-member before asking the driver,
and answer UNAVAILABLE while the driver takes no requests (it takes them about every second
while it drives the agents; not while starting or stopping).
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from typing import Any

import grpc
import ray

from swarm.api.proto import memory_pb2 as pb

BOARD = "membership"  # the board actor's name in the run's namespace
ANSWER_TIMEOUT_S = 120.0  # how long an RPC waits for the driver (it applies requests between chunks)
TAKING_S = 10.0  # a driver that took no request for this long is not driving (starting, stopping): UNAVAILABLE
EVENT_KEEP = 1000  # join/leave events the board keeps for Watch

STATUS_OF = {"invalid": grpc.StatusCode.INVALID_ARGUMENT, "duplicate": grpc.StatusCode.ALREADY_EXISTS,
             "unknown_team": grpc.StatusCode.NOT_FOUND, "unknown_agent": grpc.StatusCode.NOT_FOUND,
             "last_member": grpc.StatusCode.FAILED_PRECONDITION, "no_data": grpc.StatusCode.FAILED_PRECONDITION,
             "server": grpc.StatusCode.FAILED_PRECONDITION, "timeout": grpc.StatusCode.DEADLINE_EXCEEDED}


@ray.remote(num_cpus=0, max_restarts=-1)
class MembershipBoard:
    """Requests waiting for the driver, its answers, the current roster and the join/leave events."""

    def __init__(self, roster: dict[str, dict[str, str]]) -> None:
        """``roster``: agent id -> ``{"name", "team", "domain"}`` of the run's members at launch."""
        self.members = dict(roster)
        self.pending: list[dict[str, Any]] = []
        self.answers: dict[str, dict[str, Any]] = {}
        self.log: list[dict[str, Any]] = []
        self.ids = itertools.count(1)
        self.seq = 0
        self.taken_at: float | None = None  # when the driver last took requests (it does every second or so)
        # which life of the actor this is: Ray restarts it (a crash of its worker) with the launch roster,
        # and the driver, seeing a new incarnation in take's answer, restores what changed since
        self.incarnation = uuid.uuid4().hex

    def submit(self, request: dict[str, Any]) -> str:
        """Queue ``request`` for the driver; its id (to read the answer with :meth:`answer_of`)."""
        rid = f"rpc-{next(self.ids)}-{time.time_ns():x}"
        self.pending.append({**request, "id": rid})
        return rid

    def withdraw(self, rid: str) -> bool:
        """Take back a request the driver has not taken yet (True then)."""
        before = len(self.pending)
        self.pending = [r for r in self.pending if r["id"] != rid]
        return len(self.pending) < before

    def take(self) -> tuple[list[dict[str, Any]], str]:
        """Every waiting request, oldest first (the driver answers each with :meth:`answer`), and this life's
        incarnation (a new one: the board restarted; the driver then calls :meth:`restore`)."""
        out, self.pending = self.pending, []
        self.taken_at = time.time()
        return out, self.incarnation

    def restore(self, roster: dict[str, dict[str, str]], log: list[dict[str, Any]]) -> None:
        """After a restart: the driver's current roster and the events it had logged here (their ``seq``
        kept, so a Watch that saw some does not see them again). Requests and answers in flight when the
        board died are lost: their RPCs time out saying so."""
        self.members, self.log = dict(roster), list(log[-EVENT_KEEP:])
        self.seq = max([self.seq, *(e["seq"] for e in self.log)])

    def idle_s(self) -> float | None:
        """Seconds since the driver last took requests; None when it never did (still starting)."""
        return None if self.taken_at is None else time.time() - self.taken_at

    def answer(self, rid: str, answer: dict[str, Any]) -> None:
        """The driver's answer to request ``rid``."""
        self.answers[rid] = answer

    def answer_of(self, rid: str) -> dict[str, Any] | None:
        """The answer to ``rid`` once given (handed out once), else None."""
        return self.answers.pop(rid, None)

    def changed(self, event: dict[str, Any], member: dict[str, str] | None) -> None:
        """Record an applied change, as the driver numbered it: ``event`` (``seq``, ``kind`` ``join`` or
        ``leave``, ``agent``, ``team``, ``time``); ``member``: a joiner's name, team and domain."""
        if event["kind"] == "join":
            self.members[event["agent"]] = dict(member or {})
        else:
            self.members.pop(event["agent"], None)
        self.seq = max(self.seq, event["seq"])
        self.log = [*self.log[-(EVENT_KEEP - 1):], event]

    def roster(self) -> dict[str, dict[str, str]]:
        """Agent id -> ``{"name", "team", "domain"}`` of every current member."""
        return dict(self.members)

    def events(self, since: int = 0) -> list[dict[str, Any]]:
        """Join and leave events after ``since`` (``seq``, ``kind``, ``agent``, ``team``, ``time``)."""
        return [e for e in self.log if e["seq"] > since]


def board_of(namespace: str):
    """The run's board actor, or None when the run has none (a driver from before membership)."""
    try:
        return ray.get_actor(BOARD, namespace=namespace)
    except ValueError:
        return None


def open_board(namespace: str, roster: dict[str, dict[str, str]]):
    """Create the run's board (the driver, at launch); an old one left in the namespace is replaced."""
    old = board_of(namespace)
    if old is not None:
        ray.kill(old, no_restart=True)
        for _ in range(100):  # the name is free only once the old actor is gone
            if board_of(namespace) is None:
                break
            time.sleep(0.05)
    return MembershipBoard.options(name=BOARD, namespace=namespace).remote(roster)


class MembershipRefused(Exception):
    """A membership request answered with a refusal; ``code`` its gRPC status."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


async def ask(board, request: dict[str, Any], timeout_s: float = ANSWER_TIMEOUT_S) -> dict[str, Any]:
    """Submit ``request`` to the board and wait (polling every 0.1 s) for the driver's answer; a refusal
    raises :class:`MembershipRefused` with its code's status. Not answered within ``timeout_s``:
    the request is withdrawn if the driver has not taken it (else it may still be applied) and
    DEADLINE_EXCEEDED is raised, saying which."""
    rid = await board.submit.remote(request)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        answer = await board.answer_of.remote(rid)
        if answer is not None:
            if not answer.get("ok"):
                code = STATUS_OF.get(answer.get("code") or "", grpc.StatusCode.FAILED_PRECONDITION)
                raise MembershipRefused(code, answer.get("reason") or "refused")
            return answer
        await asyncio.sleep(0.1)
    taken = not await board.withdraw.remote(rid)
    raise MembershipRefused(grpc.StatusCode.DEADLINE_EXCEEDED,
                            f"the run's driver did not answer within {timeout_s:.0f} s (it applies membership "
                            "requests between chunks); " + ("it took the request and may still apply it: see "
                                                            "swarm status" if taken else "the request was withdrawn"))


def response(answer: dict[str, Any]) -> pb.MembershipResponse:
    """The RPC's reply from the driver's answer."""
    return pb.MembershipResponse(agent=answer.get("agent", ""), team=answer.get("team", ""), op=answer.get("op", ""),
                                 children=int(answer.get("children") or 0), version=int(answer.get("version") or 0),
                                 time=float(answer.get("time") or 0.0), detail=answer.get("reason", ""))


def _check(levels, request, add: bool) -> None:
    """Refuse at once what the driver would refuse anyway (a malformed request, an unknown team or agent)."""
    members = getattr(levels, "members", {})
    if add:
        teams = sorted({spec.swarm for spec in members.values()})
        if not request.name or "/" in request.name:
            raise MembershipRefused(grpc.StatusCode.INVALID_ARGUMENT,
                                    f"name: {request.name!r} is not an agent name (letters, digits, no '/')")
        if request.team not in teams:
            raise MembershipRefused(grpc.StatusCode.NOT_FOUND, f"team: no team {request.team!r} in this run "
                                                               f"(teams: {', '.join(teams)})")
    elif not any(request.agent in (aid, spec.name) for aid, spec in members.items()):
        raise MembershipRefused(grpc.StatusCode.NOT_FOUND if request.agent else grpc.StatusCode.INVALID_ARGUMENT,
                                f"agent: {request.agent!r} is not a member (members: {', '.join(members)})")


async def _board(levels):
    """The run's board, when its driver is taking requests; else FAILED_PRECONDITION or UNAVAILABLE."""
    board = getattr(levels, "board", None)
    if board is None:
        raise MembershipRefused(grpc.StatusCode.FAILED_PRECONDITION, "this run has no membership board (served "
                                "from its checkpoints, or started before membership existed)")
    idle = await board.idle_s.remote()
    if idle is None or idle > TAKING_S:
        raise MembershipRefused(grpc.StatusCode.UNAVAILABLE, "the run's driver is not taking membership requests "
                                "now (it is starting or stopping, or nobody drives the run); try again")
    return board


async def add_agent(levels, request) -> pb.MembershipResponse:
    """AddAgent: ``name`` joins ``team`` (its documents: ``data`` files, else the run's workload's)."""
    await levels.refresh(force=True)
    _check(levels, request, add=True)
    answer = await ask(await _board(levels), {"op": "add", "name": request.name, "team": request.team,
                                              "data": list(request.data)})
    await levels.refresh(force=True)  # this process's calls see the new member at once
    return response(answer)


async def remove_agent(levels, request) -> pb.MembershipResponse:
    """RemoveAgent: ``agent`` (an id or a name) leaves; its checkpoint is kept (add it back to resume)."""
    await levels.refresh(force=True)
    _check(levels, request, add=False)
    answer = await ask(await _board(levels), {"op": "remove", "name": request.agent})
    await levels.refresh(force=True)
    return response(answer)


async def call(fn, levels, request, error):
    """``fn(levels, request)`` for the service, a refusal raised as ``error(code, message)`` (its RequestError)."""
    try:
        return await fn(levels, request)
    except MembershipRefused as e:
        raise error(e.code, str(e)) from None
