"""``Learn``: text sent to agents over gRPC, queued durably in their inboxes (docs/learn.md).

The service writes straight into each agent's inbox journal (:class:`cluster.inbox.Inbox`, in the
agent's store directory), so it needs neither the agent's actor nor its attention: the agent reads
new documents at its next context boundary. Where an agent's inbox lies comes from the record the
agent publishes (``inbox.dir``: the live snapshots, or a stopped run's ``status.json``), so a
stopped run can be fed too and learns at its resume.

A call is a client stream of :class:`LearnRequest` messages, one document each, to an agent or to a
team (round robin over its members, or every member). The whole stream is checked first, then
queued; the answer comes once every document is journaled (fsynced). Refusals, with nothing queued:
INVALID_ARGUMENT (no target or both, an unknown mode, an empty text, a text over
``learn.max_document_bytes``, a text the model's tokenizer cannot encode into at least 2 known
tokens, an empty stream), NOT_FOUND (an unknown agent or team), RESOURCE_EXHAUSTED (an inbox would
pass ``learn.max_inbox_bytes``: the message gives its current depth), UNAVAILABLE (an agent that has
not published its inbox yet). The bearer token, when one is set, is required as for every RPC.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc

from cluster.inbox import Inbox, InboxFull, InboxUnsupported
from cluster.metrics import InboxProbe
from swarm.api.proto import memory_pb2 as pb
from swarm.config.learn import LearnConfig

MODES = {pb.LEARN_ROUND_ROBIN: "round robin", pb.LEARN_EVERY_MEMBER: "every member"}


class LearnRefused(Exception):
    """A Learn stream refused with ``code`` (nothing queued); the message says why."""

    def __init__(self, code: grpc.StatusCode, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason  # the refusal's label in swarm_inbox_refusals ("" when no agent is to blame)


class Learner:
    """Queues Learn streams into the agents' inboxes of one run (see the module doc).

    ``levels``: the service's backend (its ``topology`` and ``statuses()``); ``tokenizer``: the model's;
    ``vocab_rows``: rows of the model's embedding (a token id at or above it cannot be learned)."""

    def __init__(self, levels: Any, cfg: LearnConfig, tokenizer: Any, vocab_rows: int,
                 probe: InboxProbe | None = None) -> None:
        self.levels, self.cfg, self.tokenizer, self.vocab_rows = levels, cfg, tokenizer, vocab_rows
        self.probe = probe or InboxProbe()
        self.agents = {a.id: a for a in levels.topology.agents}
        self.teams: dict[str, list[str]] = {}
        for a in levels.topology.agents:
            self.teams.setdefault(a.swarm, []).append(a.id)
        self.turn: dict[str, int] = {}  # team -> the next member round robin sends to
        self.inboxes: dict[str, Inbox] = {}
        self.locks: dict[str, asyncio.Lock] = {}  # one writer per inbox in this process at a time

    async def follow(self, force: bool = False) -> None:
        """Bring the agents and teams up to the run's current members (the roster as of at most
        ``ROSTER_TTL_S`` ago, or read now when ``force``)."""
        await self.levels.refresh(force=force)
        if set(self.agents) == set(self.levels.members):
            return
        self.agents = dict(self.levels.members)
        self.teams = {}
        for aid, spec in self.levels.members.items():
            self.teams.setdefault(spec.swarm, []).append(aid)

    # ------------------------------------------------------------------ checks
    def _check_text(self, i: int, text: str) -> int:
        size = len(text.encode("utf-8"))
        if size == 0:
            raise LearnRefused(grpc.StatusCode.INVALID_ARGUMENT, f"text: document {i} is empty", "empty")
        if size > self.cfg.max_document_bytes:
            raise LearnRefused(grpc.StatusCode.INVALID_ARGUMENT, f"text: document {i} has {size} bytes, over "
                               f"learn.max_document_bytes={self.cfg.max_document_bytes}", "too large")
        try:
            ids = self.tokenizer.encode(text)
        except Exception as e:  # noqa: BLE001 - whatever a tokenizer raises on text it cannot take
            raise LearnRefused(grpc.StatusCode.INVALID_ARGUMENT,
                               f"text: document {i}: the model's tokenizer cannot encode it ({e})",
                               "unencodable") from None
        unknown = getattr(getattr(self.tokenizer, "hf", None), "unk_token_id", None)
        bad = [t for t in ids if t >= self.vocab_rows or (unknown is not None and t == unknown)]
        if bad:
            raise LearnRefused(grpc.StatusCode.INVALID_ARGUMENT,
                               f"text: document {i}: the model's tokenizer cannot encode it ({len(bad)} of "
                               f"{len(ids)} tokens are unknown or outside the model's {self.vocab_rows} rows)",
                               "unencodable")
        if len(ids) < 2:
            raise LearnRefused(grpc.StatusCode.INVALID_ARGUMENT, f"text: document {i} is {len(ids)} token(s) "
                               "for the model's tokenizer; at least 2 are needed to learn from it", "too few tokens")
        return size

    def _targets(self, i: int, req: pb.LearnRequest) -> list[str]:
        if bool(req.agent) == bool(req.team):
            raise LearnRefused(grpc.StatusCode.INVALID_ARGUMENT,
                               f"document {i}: name an agent or a team (exactly one), got "
                               f"agent={req.agent!r} team={req.team!r}")
        if req.mode not in MODES:
            raise LearnRefused(grpc.StatusCode.INVALID_ARGUMENT, f"mode: document {i}: unknown mode {req.mode}")
        if req.agent:
            if req.agent not in self.agents:
                raise LearnRefused(grpc.StatusCode.NOT_FOUND, f"agent: no agent {req.agent!r} "
                                   f"(agents: {', '.join(self.agents)})")
            return [req.agent]
        members = self.teams.get(req.team)
        if not members:
            raise LearnRefused(grpc.StatusCode.NOT_FOUND, f"team: no team {req.team!r} "
                               f"(teams: {', '.join(self.teams)})")
        if req.mode == pb.LEARN_EVERY_MEMBER:
            return list(members)
        turn = self.turn.get(req.team, 0)
        self.turn[req.team] = turn + 1
        return [members[turn % len(members)]]

    async def _inbox(self, agent: str) -> Inbox:
        inbox = self.inboxes.get(agent)
        if inbox is None:
            snaps = await self.levels.statuses()
            record = snaps.agents[agent].status if agent in snaps.agents else {}
            where = (record or {}).get("inbox") or {}
            if not where.get("dir"):
                raise LearnRefused(grpc.StatusCode.UNAVAILABLE, f"agent: {agent!r} has not published its inbox "
                                   "yet (it is starting); try again")
            inbox = Inbox(where["dir"], max_bytes=self.cfg.max_inbox_bytes)
            await asyncio.to_thread(inbox.write_settings, self.cfg.share, self.cfg.max_inbox_bytes)
            self.inboxes[agent] = inbox
        return inbox

    # ------------------------------------------------------------------ the RPC
    async def learn(self, requests: AsyncIterator[pb.LearnRequest]) -> pb.LearnResponse:
        """Check the whole stream, then queue it (all or nothing) and answer with the receipts."""
        turns, sent = dict(self.turn), {}  # sent: agent -> documents of this stream meant for it
        try:
            return await self._learn(requests, sent)
        except LearnRefused as e:
            self.turn = turns  # a refused stream takes no turns
            if e.reason:  # every document of the stream was refused, counted against the agent it was for
                for agent, n in sent.items():
                    self.probe.refused(self.agents[agent], e.reason, n)
            raise

    async def _learn(self, requests: AsyncIterator[pb.LearnRequest], sent: dict[str, int]) -> pb.LearnResponse:
        batches: dict[str, list[tuple[str, str]]] = {}
        sizes: dict[str, int] = {}  # bytes of the stream per agent: bounded while it is read
        i = 0
        async for req in requests:
            if (req.agent and req.agent not in self.agents) or (req.team and req.team not in self.teams):
                await self.follow(force=True)  # it may have joined since the roster was read
            targets = self._targets(i, req)
            for agent in targets:
                sent[agent] = sent.get(agent, 0) + 1
            size = self._check_text(i, req.text)
            for agent in targets:
                batches.setdefault(agent, []).append((req.text, req.source))
                sizes[agent] = sizes.get(agent, 0) + size
                if sizes[agent] > self.cfg.max_inbox_bytes:
                    raise LearnRefused(grpc.StatusCode.RESOURCE_EXHAUSTED, f"the stream's documents for agent "
                                       f"{agent} pass {sizes[agent]} bytes, more than an inbox holds "
                                       f"(learn.max_inbox_bytes={self.cfg.max_inbox_bytes})", "full")
            i += 1
        if not batches:
            raise LearnRefused(grpc.StatusCode.INVALID_ARGUMENT, "the stream holds no documents")
        inboxes = {a: await self._inbox(a) for a in sorted(batches)}
        async with contextlib.AsyncExitStack() as stack:
            for agent in sorted(batches):  # sorted: two streams never wait on each other's locks
                await stack.enter_async_context(self.locks.setdefault(agent, asyncio.Lock()))
            # every inbox has room before any is written; for one inbox append's own check (under the
            # inbox's file lock) is that, and skipping the pre-check saves a listing and a read per call
            for agent in batches if len(batches) > 1 else ():
                depth, count = await asyncio.to_thread(inboxes[agent].depth)
                adding = sizes[agent]
                if depth + adding > self.cfg.max_inbox_bytes:
                    raise LearnRefused(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                       _full(agent, depth, count, adding, self.cfg.max_inbox_bytes), "full")
            receipts = []
            for agent, docs in batches.items():
                try:
                    r = await asyncio.to_thread(inboxes[agent].append, docs)
                except InboxFull as e:  # full (one inbox), or another writer process filled it meanwhile
                    raise LearnRefused(grpc.StatusCode.RESOURCE_EXHAUSTED, _full(agent, e.depth, e.docs, e.adding,
                                                                                 e.limit), e.reason) from None
                except InboxUnsupported as e:  # an object store without a conditional put
                    raise LearnRefused(grpc.StatusCode.FAILED_PRECONDITION, f"agent {agent}: {e}") from None
                receipts.append(pb.LearnReceipt(agent=agent, seqs=r.seqs, bytes=r.nbytes, depth_bytes=r.depth,
                                                depth_docs=r.depth_docs))
        return pb.LearnResponse(receipts=receipts, documents=sum(len(r.seqs) for r in receipts),
                                bytes=sum(r.bytes for r in receipts))


def _full(agent: str, depth: int, docs: int, adding: int, limit: int) -> str:
    return (f"agent {agent}'s inbox is full: {depth} unconsumed bytes in {docs} documents; adding {adding} bytes "
            f"would pass learn.max_inbox_bytes={limit}")


def inbox_stats(agents: dict[str, Any]) -> list[pb.AgentInbox]:
    """The inboxes of the agents' published records (agent id -> snapshot), for ``Stats``."""
    out = []
    for aid, snap in agents.items():
        box = (snap.status or {}).get("inbox")
        if box:
            out.append(pb.AgentInbox(agent=aid, depth_bytes=box["depth_bytes"], depth_docs=box["depth_docs"],
                                     cursor=box["cursor"], learned_docs=box["learned_docs"],
                                     learned_bytes=box["learned_bytes"]))
    return out
