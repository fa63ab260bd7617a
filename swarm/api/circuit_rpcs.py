"""``ListCircuits`` and ``GetCircuit``: the circuits the level servers track, with the held-out snippets
that activate them most (:mod:`swarm.api.circuit_snippets`). A mixin of
:class:`swarm.api.servicer.SharedMemoryService`, which provides ``levels``, ``finder``, ``lock``,
``snippet_cache``, ``_level`` and ``_load``."""

from __future__ import annotations

import asyncio

import grpc

from cluster.wire import encode
from swarm.api.errors import RequestError, invalid
from swarm.api.proto import memory_pb2 as pb


class CircuitRpcs:
    """The circuit RPCs of the shared-memory service (see the module docstring for what it needs)."""

    async def _circuits(self, level: str, module: str) -> list[tuple[str, dict]]:
        names = [self._level(level, "level")] if level else list(self.levels.specs)
        found = []
        for name in names:
            for c in await self.levels.call(name, "circuits"):
                if not module or c["module"] == module:
                    found.append((name, c))
        return found

    @staticmethod
    def _circuit(name: str, c: dict, payload: bytes = b"", snippets=()) -> pb.Circuit:
        return pb.Circuit(id=f"{name}#{c['module']}#{c['id']}", level=name, module=c["module"],
                          strength=c["strength"], score=c["score"], age=c["age"], payload=payload,
                          snippets=[pb.Snippet(before=s.before, focus=s.focus, after=s.after,
                                               activation=s.activation, agent=s.source) for s in snippets])

    async def snippets_of(self, found: list[tuple[str, dict]], k: int) -> list[list]:
        """The ``k`` top-activating held-out snippets (:class:`layers.circuits.snippets.Snippet`) of each
        ``(level, circuit)`` in ``found``, computed once per level version (one forward pass per level)."""
        if k < 0:
            raise invalid("snippets", f"must be >= 0, got {k}")
        if not k or not found:
            return [[] for _ in found]
        if self.finder is None:
            raise RequestError(grpc.StatusCode.FAILED_PRECONDITION, "snippets: this service has no held-out data")
        out: dict[int, list] = {}
        async with self.lock:
            for name in dict.fromkeys(n for n, _ in found):
                versions = await self._load(self.finder.chain(name))
                todo = [(i, c) for i, (n, c) in enumerate(found) if n == name]
                keys = {i: (name, versions[name], c["module"], c["id"], k) for i, c in todo}
                missing = [(i, c) for i, c in todo if keys[i] not in self.snippet_cache]
                if missing:
                    got = await asyncio.to_thread(self.finder.find, name, [c for _, c in missing], k)
                    self.snippet_cache.update({keys[i]: g for (i, _), g in zip(missing, got, strict=True)})
                out.update({i: self.snippet_cache[keys[i]] for i, _ in todo})
        return [out[i] for i in range(len(found))]

    async def ListCircuits(self, request, context):
        """The tracked circuits of one level (or all), optionally of one module, highest stability score
        first, at most ``limit`` (0: all); with ``snippets`` > 0, each with that many top-activating snippets of
        its level's agents' held-out text (:meth:`snippets_of`).
        """
        if request.limit < 0:
            raise invalid("limit", f"must be >= 0, got {request.limit}")
        found = sorted(await self._circuits(request.level, request.module), key=lambda x: -x[1]["score"])
        if request.limit:
            found = found[: request.limit]
        snippets = await self.snippets_of(found, request.snippets)
        return pb.ListCircuitsResponse(circuits=[self._circuit(n, c, snippets=s)
                                                 for (n, c), s in zip(found, snippets, strict=True)])

    async def GetCircuit(self, request, context):
        """One circuit by its ``<level>#<module>#<number>`` id, with its ``u`` and ``w`` vectors in the
        payload (wire format), and ``snippets`` top-activating held-out snippets. NOT_FOUND when it is gone
        (circuits come and go).
        """
        parts = request.id.split("#")
        if len(parts) != 3 or not parts[2].isdigit():
            raise invalid("id", f"expected '<level>#<module>#<number>' (from ListCircuits), got {request.id!r}")
        name, module, number = parts[0], parts[1], int(parts[2])
        self._level(name, "id")
        for _, c in await self._circuits(name, module):
            if c["id"] == number:
                snippets = (await self.snippets_of([(name, c)], request.snippets))[0]
                return self._circuit(name, c, encode({"u": c["u"], "w": c["w"]}), snippets)
        raise RequestError(grpc.StatusCode.NOT_FOUND, f"id: no circuit {request.id!r} (circuits come and go; "
                                                      "list them again)")
