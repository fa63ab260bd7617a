"""The RPCs of ``swarm.v1.SharedMemory``, read from the proto's descriptor: the one list of them."""

from __future__ import annotations

import enum

from swarm.api.proto import memory_pb2 as pb

SERVICE = pb.DESCRIPTOR.services_by_name["SharedMemory"]
SERVICE_NAME = SERVICE.full_name  # "swarm.v1.SharedMemory"


class Kind(enum.Enum):
    """How an RPC answers: one response, or a stream of them."""

    UNARY = "unary"
    SERVER_STREAM = "server_stream"


RPCS: dict[str, Kind] = {m.name: Kind.SERVER_STREAM if m.server_streaming else Kind.UNARY for m in SERVICE.methods}


def path(name: str) -> str:
    """The gRPC method path of ``name``, e.g. ``/swarm.v1.SharedMemory/Stats``."""
    return f"/{SERVICE_NAME}/{name}"
