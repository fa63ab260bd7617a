"""The events ``Watch`` streams from a live run: its level servers' (merges, promotions, phases,
rejections) and its members' (``join``, ``leave``: :mod:`swarm.api.membership`'s board).

A level event carries its server's own ``seq``; a join or leave event carries the board's, with
``level`` its team's server and ``agent`` the agent id.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from cluster.topology import server_name
from swarm.api.proto import memory_pb2 as pb

POLL_S = 0.2  # how often the servers and the board are asked for new events


async def watch(levels, names: list[str], done: Callable[[], bool]) -> AsyncIterator[pb.Event]:
    """The events of the servers ``names`` (and the joins and leaves of their teams) from now on, polling
    every :data:`POLL_S` until ``done()``; a restarted server's numbering is followed."""
    seen = {}
    for name in names:  # only what happens from now on
        events = await levels.call(name, "events", 0)
        seen[name] = events[-1]["seq"] if events else 0
    joins = Joins(levels, names)
    await joins.start()
    while not done():
        for event in await joins.poll():
            yield event
        for name in names:
            events = await levels.call(name, "events", seen[name])
            if events and events[0]["seq"] <= seen[name]:  # the server restarted: its numbering too
                seen[name] = 0
            for e in events:
                seen[name] = e["seq"]
                yield pb.Event(level=name, seq=e["seq"], kind=e["kind"], version=e["version"],
                               detail=e["detail"], time=e["time"])
        await asyncio.sleep(POLL_S)


class Joins:
    """The join and leave events of a live run's board, as ``Watch`` events of the watched team servers."""

    def __init__(self, levels, names: list[str]) -> None:
        self.levels, self.names, self.seen = levels, set(names), 0
        self.board = getattr(levels, "board", None)

    async def start(self) -> None:
        """From now on: events before this are not streamed."""
        if self.board is not None:
            events = await self.board.events.remote(0)
            self.seen = events[-1]["seq"] if events else 0

    def _server(self, team: str) -> str:
        return server_name(self.levels.topology.levels[0], team) if self.levels.topology.levels else ""

    async def poll(self) -> list[pb.Event]:
        """The join/leave events since the last poll whose team server is watched."""
        if self.board is None:
            return []
        events = await self.board.events.remote(self.seen)
        out = []
        for e in events:
            self.seen = e["seq"]
            server = self._server(e["team"])
            if server in self.names:
                out.append(pb.Event(level=server, seq=e["seq"], kind=e["kind"], agent=e["agent"], time=e["time"],
                                    detail=f"{e['agent']} {'joined' if e['kind'] == 'join' else 'left'} "
                                           f"team {e['team']}"))
        return out
