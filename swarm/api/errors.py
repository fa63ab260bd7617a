"""The service's refusal: :class:`RequestError`, raised inside an RPC and turned into its status code
with the message as details (by ``swarm.api.servicer``'s error handling)."""

from __future__ import annotations

import grpc


class RequestError(Exception):
    """A request the service refuses: raised inside an RPC, turned into ``code`` with the message as details."""
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def invalid(field: str, why: str) -> RequestError:
    """INVALID_ARGUMENT naming the request ``field`` and ``why``."""
    return RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"{field}: {why}")
