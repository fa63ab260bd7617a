"""handle_errors: refusals become their codes, an unreachable actor of the run becomes UNAVAILABLE (a code
clients retry on) with Ray's reason, anything else stays UNKNOWN; every call is counted with its code."""

import asyncio

import grpc
import pytest
from ray.exceptions import ActorDiedError, ActorUnavailableError, GetTimeoutError

from swarm.api.errors import RequestError, actor_unavailable, handle_errors
from swarm.api.rpcs import RPCS, Kind


class Aborted(Exception):
    pass


class Context:
    async def abort(self, code, details):
        raise Aborted(code, details)


class Probe:
    def __init__(self):
        self.seen = []

    def observe(self, name, code, seconds):
        self.seen.append((name, code))


class Service:
    """Every RPC raises ``self.error``."""

    error: Exception = RuntimeError("boom")

    def __init__(self):
        for name, kind in RPCS.items():
            setattr(self, name, self._unary if kind is Kind.UNARY else self._stream)

    async def _unary(self, request, context):
        raise self.error

    async def _stream(self, request, context):
        raise self.error
        yield  # a generator


def call(service, name):
    fn = getattr(service, name)

    async def run():
        if RPCS[name] is Kind.UNARY:
            return await fn(None, Context())
        return [x async for x in fn(None, Context())]

    return asyncio.run(run())


UNAVAILABLE = [ActorUnavailableError("The actor is temporarily unavailable: connection refused", b"x" * 16),
               ActorDiedError(), GetTimeoutError("Get timed out: some object(s) not ready.")]


@pytest.mark.parametrize("error", UNAVAILABLE, ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("name", ["Stats", "Learn", "Watch"])
def test_an_unreachable_actor_is_unavailable_with_its_reason(error, name):
    probe = Probe()
    service = handle_errors(Service(), probe)
    service.error = error
    with pytest.raises(Aborted) as e:
        call(service, name)
    code, details = e.value.args
    assert code is grpc.StatusCode.UNAVAILABLE and type(error).__name__ in details and "try again" in details
    assert probe.seen == [(name, "UNAVAILABLE")]


def test_a_refusal_keeps_its_code_and_anything_else_stays_unknown():
    probe = Probe()
    service = handle_errors(Service(), probe)
    service.error = RequestError(grpc.StatusCode.NOT_FOUND, "no agent 'x'")
    with pytest.raises(Aborted) as e:
        call(service, "Stats")
    assert e.value.args == (grpc.StatusCode.NOT_FOUND, "no agent 'x'")
    service.error = RuntimeError("boom")
    with pytest.raises(RuntimeError, match="boom"):  # grpc answers UNKNOWN
        call(service, "Stats")
    assert probe.seen == [("Stats", "NOT_FOUND"), ("Stats", "UNKNOWN")]
    assert actor_unavailable(ValueError("x")) is None
