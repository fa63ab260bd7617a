"""``SharedMemory`` over gRPC (``swarm.v1``, see ``swarm/proto/memory.proto``): read-only queries of a swarm.

The servicer reads the run's level servers (Ray actors, awaited from the gRPC event loop)
and runs a ``MemoryModel`` for Generate, Score and ExportAdapter. Only ``Learn`` changes
anything: it queues documents in agents' inboxes (:mod:`swarm.api.learn`). Errors: an unknown
level or circuit is NOT_FOUND; a malformed field is INVALID_ARGUMENT naming the field; text or
generation above the limits is RESOURCE_EXHAUSTED. A request running past its deadline is stopped (DEADLINE_EXCEEDED).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator

import grpc

from cluster.metrics import inbox_probe, rpc_probe
from cluster.topology import Topology
from cluster.wire import encode
from swarm.api import events, membership
from swarm.api.backends import CheckpointLevels, RayLevels
from swarm.api.circuit_rpcs import CircuitRpcs
from swarm.api.circuit_snippets import SnippetFinder
from swarm.api.errors import RequestError, handle_errors, invalid
from swarm.api.learn import Learner, LearnRefused, inbox_stats
from swarm.api.model import MemoryModel
from swarm.api.proto import memory_pb2 as pb
from swarm.api.proto import memory_pb2_grpc as pb_grpc
from swarm.config.serve import ServeConfig


class SharedMemoryService(CircuitRpcs, pb_grpc.SharedMemoryServicer):
    """The ``swarm.v1.SharedMemory`` RPCs over one run's level servers and agents.

    Levels are pulled over Ray only when their version changed (and at most once per
    ``serve.level_ttl_ms``); serialised GetLevel chunks are kept per version. Requests that use the
    local model (Generate, Score, ExportAdapter) run one at a time. Bad requests raise
    :class:`RequestError` (INVALID_ARGUMENT, NOT_FOUND, RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED).
    """
    def __init__(self, levels: RayLevels | CheckpointLevels, memory: MemoryModel, cfg: ServeConfig,
                 finder: SnippetFinder | None = None) -> None:
        """``finder``: computes circuits' snippets (None: a request for snippets is FAILED_PRECONDITION)."""
        self.levels, self.memory, self.cfg, self.finder = levels, memory, cfg, finder
        self.snippet_cache: dict[tuple[str, int, str, int, int], list] = {}  # (level, version, module, id, k)
        self.lock = asyncio.Lock()  # one request at a time uses the model
        # name -> (version, tensors): a level moves over Ray only when its version changed
        self.cache: dict[str, tuple[int, dict]] = {}
        self.confirmed: dict[str, float] = {}  # name -> when its version was last checked (monotonic s)
        self.encoded: dict[tuple[str, int, int], list[bytes]] = {}  # (name, version, limit) -> serialised chunks
        self.stats_reply: tuple[object, bytes] | None = None  # (the statuses it was made of, serialised Stats)

    async def _pull(self, name: str) -> tuple[int, dict]:
        """The level's current version and tensors, pulled only if changed since the cached copy."""
        held = self.cache.get(name)
        now = time.monotonic()
        if held and now - self.confirmed.get(name, -math.inf) < self.cfg.level_ttl_ms / 1000:
            return held
        out = await self.levels.call(name, "pull", held[0] if held else -1)
        if out["changed"]:
            self.cache[name] = (out["version"], out["tensors"])
            self.encoded = {k: v for k, v in self.encoded.items() if k[0] != name}
        self.confirmed[name] = now
        return self.cache[name]

    # ------------------------------------------------------------------ validation helpers
    def _level(self, name: str, field: str = "name") -> str:
        if not isinstance(name, str) or not name:
            raise invalid(field, "a level name is required (see ListLevels)")
        if name not in self.levels.specs:
            raise RequestError(grpc.StatusCode.NOT_FOUND, f"{field}: no level {name!r} (levels: "
                               f"{sorted(self.levels.specs)})")
        return name

    async def _chosen(self, names, agent: str = "") -> tuple[list[str], str]:
        """The levels to run with (at most one per slot) and why they were chosen (a readable phrase).

        Named ``names``: those. Else with ``agent``: the shared levels of that agent's team chain. Else
        the best-trained chain: the lowest shared server with the most merges (ties: higher version,
        then name) and every server above it, so the default team level is never an untrained one at
        version 0 while a trained one exists (the levels above may still be at version 0 early on).
        """
        if names:
            chosen = sorted({self._level(n, "levels") for n in names})
            slots: dict[str, str] = {}
            for n in chosen:
                slot = self.levels.specs[n].level
                if slot in slots:
                    raise invalid("levels", f"{slots[slot]!r} and {n!r} both fill the {slot!r} level; name one "
                                             f"per slot with --levels (e.g. --levels {slots[slot]})")
                slots[slot] = n
            return chosen, "as requested"
        if agent:
            if agent not in self.levels.agent_ids:  # it may have joined since the roster was read
                await self.levels.refresh(force=True)
            if agent not in self.levels.agent_ids:
                raise RequestError(grpc.StatusCode.NOT_FOUND, f"agent {agent!r}: no such agent "
                                                              f"(agents: {', '.join(self.levels.agent_ids)})")
            return self.levels.route(agent), f"the team chain of agent {agent}"
        parents = {spec.parent for spec in self.levels.specs.values()}
        leaves = sorted(n for n in self.levels.specs if n not in parents)
        if not leaves:
            return [], "no shared levels"
        statuses = await asyncio.gather(*(self.levels.call(n, "status") for n in leaves))
        trained = {n: (st.get("stats", {}).get("merges", 0), st.get("version", 0)) for n, st in
                   zip(leaves, statuses, strict=True)}
        best = max(leaves, key=trained.__getitem__)  # the first of equals: the smallest name
        chain, node = [], best
        while node is not None:
            chain.append(node)
            node = self.levels.specs[node].parent
        merges = trained[best][0]
        tied = [n for n in leaves if n != best and trained[n] == trained[best]]
        why = f"the best-trained chain ({best}: {merges} merges"
        why += f"; tied with {', '.join(tied)}: pick one with --levels)" if tied else ")"
        return sorted(chain), why

    def _text(self, text: str, field: str) -> str:
        size = len(text.encode("utf-8"))
        if size > self.cfg.max_text_bytes:
            raise RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                               f"{field}: {size} bytes, the limit is {self.cfg.max_text_bytes}")
        return text

    async def _load(self, names: list[str]) -> dict[str, int]:
        """Pull the chosen levels into the model (only what changed); returns their versions."""
        versions = {}
        for name in names:
            slot = self.levels.specs[name].level
            version, tensors = await self._pull(name)
            if not self.memory.holds(slot, name, version):
                self.memory.load(slot, name, version, tensors)
            versions[name] = version
        return versions

    # ------------------------------------------------------------------ RPCs
    async def ListLevels(self, request, context):
        """Every level server of the run: name, slot, version, parent, module and parameter counts."""
        out = []
        infos = await asyncio.gather(*(self.levels.call(n, "info") for n in self.levels.specs))
        for (name, spec), info in zip(self.levels.specs.items(), infos, strict=True):
            out.append(pb.Level(name=name, slot=spec.level, version=info["version"], parent=spec.parent or "",
                                modules=len(info["shapes"]),
                                parameters=sum(a * b for a, b in info["shapes"].values())))
        return pb.ListLevelsResponse(levels=out)

    async def GetLevel(self, request, context) -> AsyncIterator[pb.TensorChunk]:
        """Stream the level's tensors as wire-format chunks of at most ``chunk_bytes`` of data
        (default ``serve.chunk_bytes``); one ``changed=False`` chunk when ``since_version`` is current.
        NOT_FOUND for an unknown level, INVALID_ARGUMENT for a negative chunk size or version below -1.
        """
        name = self._level(request.name)
        if request.since_version < -1:
            raise invalid("since_version", f"must be -1 (always) or a version >= 0, got {request.since_version}")
        if request.chunk_bytes < 0:
            raise invalid("chunk_bytes", f"must be >= 0, got {request.chunk_bytes}")
        limit = min(request.chunk_bytes or self.cfg.chunk_bytes, self.cfg.max_message_mb * 2**20 // 2)
        version, tensors = await self._pull(name)
        if request.since_version == version:
            yield pb.TensorChunk(version=version, changed=False, index=0, count=1)
            return
        key = (name, version, limit)
        if key not in self.encoded:  # serialised once per version: later calls send the bytes as they are
            payloads = _encode_chunks(name, version, tensors, limit)
            self.encoded[key] = [pb.TensorChunk(version=version, changed=True, index=i, count=len(payloads),
                                                payload=p).SerializeToString() for i, p in enumerate(payloads)]
        for chunk in self.encoded[key]:
            yield chunk

    async def ExportAdapter(self, request, context) -> AsyncIterator[pb.FileChunk]:
        """Stream the level as PEFT adapter files (``adapter_config.json``, ``adapter_model.safetensors``,
        ``README.md`` with the loader lines) in chunks of ``serve.chunk_bytes``; ``last`` marks each file's final chunk.
        """
        name = self._level(request.name)
        async with self.lock:
            version = (await self._load([name]))[name]
            files = await asyncio.to_thread(self.memory.export, self.levels.specs[name].level,
                                            f"{name} v{version} of {self.levels.where}")
        step = self.cfg.chunk_bytes
        for path, data in files.items():
            for offset in range(0, max(len(data), 1), step):
                yield pb.FileChunk(path=path, offset=offset, data=data[offset : offset + step],
                                   last=offset + step >= len(data))

    async def Generate(self, request, context):
        """Continue ``prompt`` with the base plus the chosen shared levels (one per slot; see :meth:`_chosen`),
        or, with ``agent``, as that running agent through its trajectory cache (a stopped run's agent: its
        team chain's shared levels). RESOURCE_EXHAUSTED above ``serve.max_new_tokens`` or
        ``serve.max_text_bytes``; DEADLINE_EXCEEDED when the client's deadline passes mid-generation.
        """
        prompt = self._text(request.prompt, "prompt")
        if request.max_new_tokens < 0:
            raise invalid("max_new_tokens", f"must be >= 0, got {request.max_new_tokens}")
        n = request.max_new_tokens or 64
        if n > self.cfg.max_new_tokens:
            raise RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                               f"max_new_tokens: {n} above the limit {self.cfg.max_new_tokens}")
        if not math.isfinite(request.temperature) or request.temperature < 0:
            raise invalid("temperature", f"must be finite and >= 0, got {request.temperature}")
        if request.agent:
            if request.levels or request.temperature:
                raise invalid("agent", "an agent answers greedily with its own levels: leave levels and "
                                        "temperature unset")
            await self.levels.refresh(force=request.agent not in self.levels.agent_ids)  # joins and leaves
            if self.levels.agent(request.agent) is not None:
                return await self._agent_answer(request, prompt, n)
        names, basis = await self._chosen(list(request.levels), request.agent)
        if request.agent:
            basis = f"agent {request.agent} is not running; {basis}"
        deadline = context.time_remaining()
        stop_at = None if deadline is None else time.monotonic() + deadline
        async with self.lock:
            versions = await self._load(names)
            slots = [self.levels.specs[n].level for n in names]
            try:
                raw = await asyncio.to_thread(self.memory.generate, prompt, slots, n, request.temperature,
                                               request.seed, lambda: stop_at is not None and time.monotonic() > stop_at)
            except TimeoutError as e:
                raise RequestError(grpc.StatusCode.DEADLINE_EXCEEDED, str(e)) from None
        return pb.GenerateResponse(text=raw.decode("utf-8", errors="replace"), raw=raw, versions=versions,
                                   agent=request.agent, basis=basis)

    async def _agent_answer(self, request, prompt: str, n: int):
        """Generate as a running agent, through its trajectory cache (greedy, the agent's own levels)."""
        out = await self.levels.agent(request.agent).respond.remote(prompt.encode("utf-8"), n)
        self.levels.changed()  # its cache counters moved: the next Stats shows it
        return pb.GenerateResponse(text=out["answer"].decode("utf-8", errors="replace"), raw=out["answer"],
                                   versions=out["versions"],
                                   cached=out["cached"], agent=request.agent,
                                   basis=f"agent {request.agent}'s own levels")

    async def Score(self, request, context):
        """Bits per byte of ``text`` with the chosen levels (see :meth:`_chosen`; ``agent``: that agent's team
        chain), and each level's contribution (bits per byte without it minus with it: positive helps).
        """
        text = self._text(request.text, "text")
        if len(text.encode("utf-8")) < 2:
            raise invalid("text", "needs at least 2 bytes to score")
        if request.agent and request.levels:
            raise invalid("agent", "name levels or an agent, not both")
        names, basis = await self._chosen(list(request.levels), request.agent)
        async with self.lock:
            versions = await self._load(names)
            slots = {n: self.levels.specs[n].level for n in names}
            try:
                full, n_bytes = await asyncio.to_thread(self.memory.bits_per_byte, text, list(slots.values()))
            except ValueError as e:  # a text of several bytes may still be one token of the model's tokenizer
                raise invalid("text", str(e)) from None
            contributions = {}
            for name, slot in slots.items():
                without, _ = await asyncio.to_thread(self.memory.bits_per_byte, text,
                                                     [s for s in slots.values() if s != slot])
                contributions[name] = without - full
        return pb.ScoreResponse(bits_per_byte=full, contributions=contributions, bytes=n_bytes, versions=versions,
                                basis=basis)

    async def Stats(self, request, context):
        """Counters of every level server (merges, accepted and refused pushes by reason, promotions,
        forwards, screened fraction, pending pushes) and every running agent's trajectory cache; for a
        stopped run, those of its last ``status.json``.

        A live run answers from the status snapshots its servers and agents publish (on every change of
        a server, at least every 0.5 s from a training agent): no Ray call to any actor, so a busy agent
        never delays the answer, which is at most ``serve.level_ttl_ms`` older than the last publish.
        The reply is serialised once per read of the snapshots.
        """
        snaps = await self.levels.statuses()
        if self.stats_reply is not None and self.stats_reply[0] is snaps:
            return self.stats_reply[1]
        out = []
        for name, snap in snaps.levels.items():
            st = snap.status
            s = st["stats"]
            out.append(pb.LevelStats(name=name, version=st["version"], merges=s.get("merges", 0),
                                     accepted=s.get("accepted", 0), rejected=s.get("rejected", {}),
                                     promotions=s.get("promotions", 0), forwarded=s.get("forwarded", 0),
                                     screened_fraction=st.get("screened_fraction", 0.0), pending=st["pending"],
                                     rank=int(st.get("rank", 0)), growths=int(st.get("growths", 0)),
                                     crystallised_fraction=st.get("crystallised_fraction", 0.0)))
        agents = []
        for aid, snap in snaps.agents.items():
            record = snap.status
            if not record or "cache" not in record:
                continue
            c = record["cache"]
            agents.append(pb.AgentCacheStats(agent=aid, **{k: c.get(k, 0) for k in (
                "entries", "lookups", "hits", "hit_rate", "confirmed", "internalised", "failed", "evicted")}))
        reply = pb.StatsResponse(levels=out, namespace=self.levels.namespace, agents=agents,
                                 inboxes=inbox_stats(snaps.agents)).SerializeToString()
        self.stats_reply = (snaps, reply)  # StrictCodec sends bytes as they are
        return reply

    async def Watch(self, request, context) -> AsyncIterator[pb.Event]:
        """Stream the level servers' events (merges, promotions, phase changes) and their teams' joins and
        leaves from now on (:mod:`swarm.api.events`), until the client cancels. FAILED_PRECONDITION
        for a stopped run (served from its checkpoints): nothing happens there to watch.
        """
        names = [self._level(n, "levels") for n in request.levels] or list(self.levels.specs)
        if not self.levels.live:
            raise RequestError(grpc.StatusCode.FAILED_PRECONDITION,
                               f"the run is {getattr(self.levels, 'state', 'stopped')} and served from its "
                               "checkpoints: nothing happens there to watch (resume it with `swarm run --resume "
                               "RUN_DIR --serve`)")
        async for event in events.watch(self.levels, names, context.done):
            yield event

    learner: Learner | None = None  # build_service gives every service one

    async def Learn(self, request_iterator, context):
        """Queue a stream of documents in agents' inboxes, durably, and answer with their sequence numbers
        (:mod:`swarm.api.learn`: the checks and status codes; nothing is queued on an error)."""
        if self.learner is None:
            raise RequestError(grpc.StatusCode.UNIMPLEMENTED, "this service was built without Learn")
        await self.learner.follow()  # the members as they are now
        try:
            return await self.learner.learn(request_iterator)
        except LearnRefused as e:
            raise RequestError(e.code, str(e)) from None

    async def AddAgent(self, request, context):
        """A new member of a team, applied by the run's driver between chunks (:mod:`swarm.api.membership`)."""
        return await membership.call(membership.add_agent, self.levels, request, RequestError)

    async def RemoveAgent(self, request, context):
        """A member leaves the live run; its checkpoint is kept (:mod:`swarm.api.membership`)."""
        return await membership.call(membership.remove_agent, self.levels, request, RequestError)


def _encode_chunks(name: str, version: int, tensors: dict, limit: int) -> list[bytes]:
    """The level's tensors in wire payloads of at most ``limit`` bytes of data (a larger tensor goes alone)."""
    groups, current, size = [], {}, 0
    for module, t in sorted(tensors.items()):
        nbytes = t.numel() * t.element_size()
        if current and size + nbytes > limit:
            groups.append(current)
            current, size = {}, 0
        current[module] = t
        size += nbytes
    groups.append(current)
    return [encode(g, {"level": name, "version": version}) for g in groups]


def build_service(cfg, namespace: str | None = None, run_dir=None) -> SharedMemoryService:
    """The service for the run of ``cfg`` (a SwarmConfig): over its live actors in ``namespace``, or, with
    ``run_dir`` instead, over that stopped run's checkpoints (:class:`CheckpointLevels`, no Ray)."""
    if (namespace is None) == (run_dir is None):
        raise ValueError("build_service: give namespace (a live run) or run_dir (a stopped one)")
    if run_dir is not None:
        from swarm.rundir import RunDir

        levels = CheckpointLevels(cfg, RunDir(run_dir))
    else:
        levels = RayLevels(Topology(cfg.workload, cfg.levels.names[2:]), namespace, cfg.serve.level_ttl_ms / 1000)
    memory = MemoryModel(cfg.model, cfg.levels)
    service = SharedMemoryService(levels, memory, cfg.serve, SnippetFinder(cfg, memory))
    probe = inbox_probe(namespace) if namespace is not None else None  # metrics of a live run only
    service.learner = Learner(levels, cfg.learn, memory.tokenizer, memory.model.get_input_embeddings().weight.shape[0],
                              probe)
    return handle_errors(service, rpc_probe())
