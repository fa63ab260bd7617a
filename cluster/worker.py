"""``AgentWorker``: an ``Agent`` wired to its level servers (no Ray; the actor wraps it).

Every step the agent learns locally. When its sync gate fires it pushes the accumulated
gradient to its swarm server, with the swarm version it last pulled as ``base_version``.
Every ``pull_every`` steps it pulls each shared level ``since`` the version it holds
and runs with what changed. Held-out bits per byte are measured every ``eval_every`` steps, at the
run's last step (``steps``) and at the end of the first chunk after a resume, each with the step it
was measured at (``eval_step`` in the record). Every ``propose_every`` steps it proposes its stable
agent-level circuits (with its agent-level matrix of each such module) to the swarm
server, removes from its agent level exactly what that server took from it, and pulls.
Every ``checkpoint_every`` steps (and on request) its local state goes to an atomic
checkpoint; a restarted worker resumes from it, pulls the shared levels and continues
its sequence numbers above what the server has already accepted.

Exactly once: every push carries the agent's step interval (``first_step..last_step``). A
restarted worker asks its swarm server which steps it already holds from it
(:meth:`~cluster.level.protocol.LevelClient.covered`); until the agent's steps pass that
point it still learns locally but drops its accumulated gradient instead of pushing it
(``skipped_steps``), so no step reaches the shared level twice. Its accounting then adopts
the server's (``pushes``, ``pushed_steps``): the pushes its previous life made after its
checkpoint are its own.

Inbox (:mod:`cluster.inbox`): a worker with a store (a directory or a URI) attaches the agent's inbox
(``<store>/inbox``) to its workload, which takes queued documents as contexts (``learn.share`` of
them, from the inbox's settings, read at every context boundary); the workload's cursor is in the agent's
checkpoint, mirrored to the inbox for its depth, and after every checkpoint the inbox may delete
the segments every kept checkpoint has consumed. ``record()['inbox']`` reports it, and the live probe
exports it (:mod:`cluster.metrics`, counting from ``inbox_start``: what was learned at this process's start).

Time spent in server calls is measured separately from local compute, which is what
``bench/system.py`` reports as the communication overhead.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agents.agent import Agent
from agents.answers import internalise, respond
from cluster.config import RuntimeConfig
from cluster.inbox import Inbox, inbox_location
from cluster.level.growth import pad_columns, send_growth
from cluster.level.protocol import LevelClient, ProposeResult, PushResult, RejectCode
from cluster.metrics import AgentProbe
from cluster.state import flatten, unflatten
from cluster.store import LevelStore
from layers.circuits import remove_projection


class AgentWorker:
    """One agent and its exchanges with the shared levels (see the module doc)."""

    probe: AgentProbe = AgentProbe()  # metrics and status snapshots: a no-op unless the actor installs a live one

    def __init__(self, agent: Agent, servers: dict[str, LevelClient], runtime: RuntimeConfig | None = None,
                 store_dir: str | Path | None = None, config_hash: str = "") -> None:
        """``servers`` maps each shared level name (swarm, domain, foundation) to its server; raises
        ``ValueError`` when one of the agent's shared levels has none. With ``store_dir`` the worker
        resumes from its last checkpoint there. Evaluates the agent once (the start) and pulls."""
        missing = sorted(set(agent.shared) - set(servers))
        if missing:
            raise ValueError(f"AgentWorker: no server for shared level(s) {missing}")
        self.agent, self.servers, self.cfg = agent, servers, runtime or RuntimeConfig()
        self.up = agent.shared[0] if agent.shared else None  # pushes and proposals go to the swarm level
        self.versions = {level: -1 for level in agent.shared}
        self.server_ranks: dict[str, int] = {}  # each level's rank as of its last reply (0: unknown, an old server)
        self.store = LevelStore(store_dir, config_hash=config_hash) if store_dir is not None else None
        self.counters = {"pushes": 0, "coherent_pushes": 0, "rejected": 0, "stale": 0, "pulls": 0, "proposed": 0,
                         "removed": 0, "promoted": 0, "internalisations": 0, "pushed_steps": 0, "skipped_steps": 0,
                         "overlap": 0}
        self.covered_through = 0  # the last agent step the swarm server held at restore: skip steps up to it
        self.comm_s = self.compute_s = 0.0  # seconds in server calls / in local steps and evaluations
        self.comm_by_kind: dict[str, float] = {}
        self.bytes_sent = 0
        self.last_eval: float | None = None
        self.last_eval_step: int | None = None  # the step last_eval was measured at
        self.eval_start: float | None = None  # held-out bits per byte before any learning
        self.resumed_from: int | None = None
        self._eval_after_chunk = False  # a resumed worker evaluates at the end of its first chunk
        self.inbox = Inbox(inbox_location(store_dir)) if store_dir is not None else None
        self._mirrored = -1  # the cursor last mirrored to the inbox
        if self.inbox is not None:  # attached before the restore: a checkpoint may be mid-document
            agent.workload.feed = self.inbox
        if self.store is not None:
            self._restore()
        # the inbox documents and bytes learned when this process took over (the metrics count from here)
        self.inbox_start = {k: int(agent.workload.fed[k]) for k in ("docs", "bytes")}
        if self.eval_start is None:
            self.eval_start = self.last_eval = agent.evaluate()
            self.last_eval_step = agent.steps
        self.pull()

    @property
    def id(self) -> str:
        """The agent's id, e.g. ``python/text/json`` (its sender name at the servers)."""
        return self.agent.id

    # ------------------------------------------------------------------ server calls (timed)
    def _call(self, kind: str, fn, *args):
        start = time.perf_counter()
        try:
            return fn(*args)
        finally:
            elapsed = time.perf_counter() - start
            self.comm_s += elapsed
            self.comm_by_kind[kind] = self.comm_by_kind.get(kind, 0.0) + elapsed
            self.probe.call(kind, elapsed)

    def pull(self) -> int:
        """Pull every shared level that changed; returns how many did. Growths of the read space a reply
        carries are applied first (:mod:`cluster.level.growth`), a level still at a lower rank is run
        zero-padded (the same function) and handed the growths it lacks."""
        changed, ranks = 0, {}
        for level, server in self.servers.items():
            out = self._call("pull", server.pull, self.versions[level])
            for event in out.get("growths", ()):
                self.agent.apply_growth(event)
            if out.get("changed"):
                rank = self.agent.stack.rank
                self.agent.load_shared(level, {m: pad_columns(t, rank) for m, t in out["tensors"].items()})
                changed += 1
            self.versions[level] = out["version"]
            ranks[level] = self.server_ranks[level] = out.get("rank", self.server_ranks.get(level, 0))
        for level, rank in ranks.items():  # pass growths on: every level of the swarm reaches the same rank
            self._hand_growths(level, rank)
        self.counters["pulls"] += 1
        return changed

    def _hand_growths(self, level: str, rank: int) -> None:
        """Hand the server of ``level``, last seen at ``rank`` (0: not known yet), the growths it lacks."""
        for event in self.agent.stack.growths:
            if rank and event.from_rank >= rank:
                self._call("grow", send_growth, self.servers[level], event)
                self.server_ranks[level] = event.to_rank

    def push(self) -> PushResult | None:
        """Push the agent's accumulated gradient if its gate fired (None: nothing to send). A stale base
        makes the worker pull right away; other refusals are counted and dropped."""
        push = self.agent.take_push()
        if push is None or self.up is None:  # no shared level: nothing to send, nobody to send it to
            return None
        tensors = push["tensors"]
        # the stack may have grown since the last pull without this worker (an agent host's shared base
        # grows every stack when one agent pulls a growth): the server first gets the growths it lacks
        self._hand_growths(self.up, self.server_ranks.get(self.up, 0))
        self.bytes_sent += sum(t.numel() * t.element_size() for t in tensors.values())
        base = max(self.versions[self.up], 0)
        out = self._call("push", self.servers[self.up].push, self.id, push["seq"], base, tensors,
                         push["first_step"], push["last_step"])
        if out.held:  # a duplicate seq: a retried push the server already holds
            self.counters["pushes"] += 1
            self.counters["pushed_steps"] += push["last_step"] - push["first_step"] + 1
            self.counters["coherent_pushes"] += push["reason"] == "coherent"  # else the gate's max_interval
        else:  # refused: never merged; a stale base means we should catch up now
            self.counters["rejected"] += 1
            self.counters["overlap"] += out.code is RejectCode.OVERLAP
            if out.code is RejectCode.STALE:
                self.counters["stale"] += 1
                self.pull()
        return out

    def propose(self) -> ProposeResult | None:
        """Propose the agent's stable circuits to its first shared level (None: it has none) and remove
        its projection onto the circuits that level accepted from it."""
        if self.up is None:
            return None
        proposals = self.agent.propose()
        self.counters["proposed"] += len(proposals)
        out = self._call("propose", self.servers[self.up].propose, self.id, proposals)
        for r in out.removals:  # exactly what the team level added (r.coefficient), so our sum of levels holds
            remove_projection(self.agent.stack.modules[r.module].B[self.agent.slow], r.u, r.w, r.coefficient)
            self.agent.trackers[self.agent.slow].forget_near(r.module, r.u, r.w)
            self.counters["removed"] += 1
        if out.removals:  # take the team level that holds them now: the function is what it was before
            self.pull()
        return out

    # ------------------------------------------------------------------ the loop
    def run(self, steps: int, step: Callable[[], dict[str, Any]] | None = None,
            chunk_end: bool = True) -> dict[str, Any]:
        """``steps`` agent steps with their exchanges; returns a summary record of the chunk. ``step``
        replaces ``agent.step`` (an agent host passes the record of a step it already computed);
        ``chunk_end``: these steps end a chunk (False: a host's step inside a longer chunk)."""
        bpbs = []
        for i in range(steps):
            start = time.perf_counter()
            out = (step or self.agent.step)()
            if self.inbox is not None and self.agent.workload.fed["cursor"] != self._mirrored:
                self._mirror_cursor()
            if self.agent.pushed_through < self.covered_through:  # the server holds this step already
                self.counters["skipped_steps"] += self.agent.drop_pending()
            self.compute_s += time.perf_counter() - start
            bpbs.append(out["bpb"])
            self.counters["promoted"] += out["promoted"]
            t = self.agent.steps
            if self.agent.cache.due():  # answers asked often enough become the agent's own
                start = time.perf_counter()
                self.counters["internalisations"] += len(internalise(self.agent))
                self.compute_s += time.perf_counter() - start
            self.push()
            if t % self.cfg.pull_every == 0:
                self.pull()
            if t % self.cfg.propose_every == 0:
                self.propose()
            # every eval_every steps, at the run's last step, and once right after a resume, so the
            # figure shown is never older than the learning it reports on
            if t % self.cfg.eval_every == 0 or t == self.cfg.steps or \
                    (self._eval_after_chunk and chunk_end and i == steps - 1):
                start = time.perf_counter()
                self.last_eval, self.last_eval_step = self.agent.evaluate(), t
                self._eval_after_chunk = False
                self.compute_s += time.perf_counter() - start
            if self.store is not None and t % self.cfg.checkpoint_every == 0:
                self.checkpoint()
            self.probe.step(self, out["bpb"])  # publishes the record at a bounded rate: a busy agent stays visible
        return self.record(train_bpb=sum(bpbs) / len(bpbs) if bpbs else math.nan)

    def respond(self, prompt: bytes, max_new_tokens: int = 32) -> dict[str, Any]:
        """Answer ``prompt`` through the trajectory cache, keyed by the shared versions this agent holds."""
        answer, cached = respond(self.agent, prompt, dict(self.versions), max_new_tokens)
        return {"answer": answer, "cached": cached, "versions": dict(self.versions)}

    def record(self, **extra: Any) -> dict[str, Any]:
        """The worker's progress record (JSON values): step, evaluations (bits per byte), versions held,
        counters, seconds in server calls and in local compute, bytes sent, cache stats, the device the
        agent computes on; plus ``extra``."""
        return {"agent": self.id, "step": self.agent.steps, "eval_bpb": self.last_eval,
                "eval_step": self.last_eval_step, "eval_start": self.eval_start, **extra,
                "versions": dict(self.versions), **self.counters, "comm_s": self.comm_s,
                "compute_s": self.compute_s, "comm_by_kind": dict(self.comm_by_kind), "bytes_sent": self.bytes_sent,
                "resumed_from": self.resumed_from, "pushed_through": self.agent.pushed_through,
                "cache": self.agent.cache.stats(), "inbox": self.inbox_status(),
                "device": str(getattr(self.agent, "device", "cpu"))}

    # ------------------------------------------------------------------ inbox
    def inbox_status(self) -> dict[str, Any] | None:
        """The inbox as this agent sees it (None: no store, so no inbox): ``dir``, where it is (an absolute
        path or a URI with its options: the query service opens it there, as a string), cursor, unconsumed
        bytes and documents after the cursor, and the documents, bytes and steps learned from it (as of the
        agent's state, checkpointed with it)."""
        if self.inbox is None:
            return None
        fed = self.agent.workload.fed
        depth, docs = self.inbox.depth(int(fed["cursor"]))
        return {"dir": self.inbox.location, "cursor": int(fed["cursor"]), "depth_bytes": depth,
                "depth_docs": docs, "learned_docs": int(fed["docs"]), "learned_bytes": int(fed["bytes"]),
                "learned_steps": int(fed["steps"]), "share": self.inbox.share}

    def _mirror_cursor(self) -> None:
        self._mirrored = int(self.agent.workload.fed["cursor"])
        self.inbox.consumed(self._mirrored)

    def _release_inbox(self) -> None:
        """Let the inbox delete what every kept checkpoint is done with: the documents up to its cursor, but
        the one it has open (a resume reopens it). A checkpoint from before ``inbox_open`` was recorded
        may have its cursor open: it keeps that one too."""
        done = []
        for manifest in self.store.dir.glob("ckpt-*/manifest.json"):
            try:
                meta = json.loads(manifest.read_text())["meta"]
                cursor = int(meta.get("inbox_cursor", 0))
                done.append(cursor - 1 if meta.get("inbox_open", cursor) else cursor)
            except (OSError, ValueError, KeyError, TypeError):
                done.append(0)  # unreadable: keep everything
        self.inbox.release(max(min(done, default=0), 0))

    # ------------------------------------------------------------------ durability
    def checkpoint(self) -> int:
        """Write the local state atomically; returns the step it holds."""
        if self.store is None:
            return self.agent.steps
        latest = self.store.latest_valid()
        if latest is None or latest.version < self.agent.steps:
            tensors, skeleton = flatten(self.agent.state_dict())
            self.store.checkpoint(self.agent.steps, tensors, {"state": skeleton, "counters": self.counters,
                                                              "last_eval": self.last_eval,
                                                              "last_eval_step": self.last_eval_step,
                                                              "eval_start": self.eval_start,
                                                              "inbox_cursor": self.agent.workload.fed["cursor"],
                                                              "inbox_open": self.agent.workload.fed["open"]})
            if self.inbox is not None:
                self._release_inbox()
        return self.agent.steps

    def _restore(self) -> None:
        rec = self.store.recover()
        if rec.checkpoint is not None:
            self.agent.load_state_dict(unflatten(rec.tensors, rec.checkpoint.meta["state"]))
            self.counters.update(rec.checkpoint.meta["counters"])
            self.last_eval = rec.checkpoint.meta["last_eval"]
            self.last_eval_step = rec.checkpoint.meta.get("last_eval_step")  # absent in older checkpoints
            self.eval_start = rec.checkpoint.meta["eval_start"]
            self.resumed_from = self.agent.steps
            self._eval_after_chunk = True
            if self.inbox is not None:  # documents opened after the checkpoint are queued again
                self._mirror_cursor()
        # pushes after the checkpoint may have been accepted already: continue above them, and skip
        # (learn, but never push again) the steps they covered
        if self.up is not None:
            self.agent.seq = max(self.agent.seq, self._call("seen", self.servers[self.up].seen, self.id))
            held = self._call("seen", self.servers[self.up].covered, self.id)
            self.covered_through = held.last
            self.counters["pushes"] = max(self.counters["pushes"], held.pushes)
            self.counters["pushed_steps"] = max(self.counters["pushed_steps"], held.steps)
            if self.agent.pushed_through < self.covered_through:
                self.counters["skipped_steps"] += self.agent.drop_pending()
