"""The service's refusal: :class:`RequestError`, raised inside an RPC and turned into its status code
with the message as details by :func:`handle_errors`, which also times every call.

An actor of the run that cannot be reached (Ray's ``RayActorError``: restarting after a crash, or gone,
and ``GetTimeoutError``) is ``UNAVAILABLE``, the code a client retries on, with Ray's first line as
details; anything else unexpected stays ``UNKNOWN`` (grpc's default)."""

from __future__ import annotations

import asyncio
import time
from typing import TypeVar

import grpc

from cluster.metrics import RpcProbe
from swarm.api.rpcs import RPCS, Kind

S = TypeVar("S")


class RequestError(Exception):
    """A request the service refuses: raised inside an RPC, turned into ``code`` with the message as details."""
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def invalid(field: str, why: str) -> RequestError:
    """INVALID_ARGUMENT naming the request ``field`` and ``why``."""
    return RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"{field}: {why}")


def actor_unavailable(e: BaseException) -> RequestError | None:
    """``UNAVAILABLE`` for an exception saying one of the run's actors cannot be reached now, else None."""
    try:
        from ray import exceptions as rx
    except ImportError:  # a service without Ray (offline) calls no actor
        return None
    if not isinstance(e, (rx.RayActorError, rx.GetTimeoutError)):
        return None
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return RequestError(grpc.StatusCode.UNAVAILABLE, f"an actor of the run is unavailable ({type(e).__name__}: "
                                                      f"{first[:300]}); try again")


def refusal_of(e: Exception) -> RequestError:
    """The status ``e`` ends a call with: itself for a :class:`RequestError`, UNAVAILABLE for an unreachable
    actor; any other exception is raised again (grpc answers UNKNOWN)."""
    refusal = e if isinstance(e, RequestError) else actor_unavailable(e)
    if refusal is None:
        raise e
    return refusal


def handle_errors(service: S, probe: RpcProbe | None = None) -> S:
    """Wrap every RPC of ``service`` (``swarm.api.rpcs.RPCS``) so a RequestError becomes its status code,
    for unary and streaming RPCs; every call's seconds and status code go to ``probe``
    (``swarm_rpc_seconds``; default: none recorded)."""
    probe = probe or RpcProbe()

    def wrap_unary(name, fn):
        async def call(request, context):
            start, code = time.perf_counter(), "UNKNOWN"
            try:
                out = await fn(request, context)
                code = "OK"
                return out
            except asyncio.CancelledError:
                code = "CANCELLED"
                raise
            except Exception as e:
                refusal = refusal_of(e)
                code = refusal.code.name
                await context.abort(refusal.code, str(refusal))
            finally:
                probe.observe(name, code, time.perf_counter() - start)
        return call

    def wrap_stream(name, fn):
        async def call(request, context):
            start, code = time.perf_counter(), "UNKNOWN"
            try:
                async for item in fn(request, context):
                    yield item
                code = "OK"
            except (asyncio.CancelledError, GeneratorExit):
                code = "CANCELLED"  # the client went away (Watch ends this way)
                raise
            except Exception as e:
                refusal = refusal_of(e)
                code = refusal.code.name
                await context.abort(refusal.code, str(refusal))
            finally:
                probe.observe(name, code, time.perf_counter() - start)
        return call

    for name, kind in RPCS.items():
        wrap = wrap_unary if kind is Kind.UNARY else wrap_stream
        setattr(service, name, wrap(name, getattr(service, name)))
    return service
