"""Starting the query service: ``grpc.aio`` with health, reflection, bearer auth, TLS and size limits.

``swarm serve RUN_DIR`` serves a live run by attaching to the Ray cluster it lives on
(``RAY_ADDRESS``, else this machine's latest local cluster); a finished or stopped run (or one
whose servers cannot be reached) is served read-only from its checkpoints, without Ray
(:class:`swarm.api.backends.CheckpointLevels`). Either way it serves until Ctrl-C. ``swarm run
--serve`` starts the same service in a background thread next to the run (``MemoryServer``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import signal
import threading

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from swarm.api.proto import memory_pb2_grpc as pb_grpc
from swarm.api.rpcs import RPCS, SERVICE_NAME, Kind
from swarm.config.serve import ServeConfig
from swarm.rundir import LIVE_STATES, RunDir

OPEN_METHODS = ("/grpc.health.v1.Health/",)  # answered without a token (load balancers, probes)


def resolve_token(cfg: ServeConfig) -> str | None:
    """The bearer token the service requires: ``serve.token``, else ``$SWARM_TOKEN``; None for no auth."""
    return cfg.token or os.environ.get("SWARM_TOKEN") or None


def is_loopback(host: str) -> bool:
    """True when ``host`` (a name or an IPv4/IPv6 address, brackets allowed) only reaches this machine."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(cfg: ServeConfig) -> None:
    """Refuse to expose the service beyond this machine without a token."""
    host = cfg.address.rpartition(":")[0]
    if not is_loopback(host) and not resolve_token(cfg):
        raise ValueError(f"serve.address: {cfg.address} is not a loopback address; set serve.token or "
                         "$SWARM_TOKEN before exposing the service")


class BearerAuth(grpc.aio.ServerInterceptor):
    """Every call but health checks must carry ``authorization: Bearer <token>``."""

    def __init__(self, token: str) -> None:
        self.expected = f"Bearer {token}"

    async def intercept_service(self, continuation, details):
        """Pass the call on when its metadata carries the expected token (or it is a health check);
        answer UNAUTHENTICATED otherwise, naming whether the token was missing or wrong.
        """
        handler = await continuation(details)
        if handler is None or details.method.startswith(OPEN_METHODS):
            return handler
        metadata = dict(details.invocation_metadata or ())
        if metadata.get("authorization") == self.expected:
            return handler
        why = "missing bearer token" if "authorization" not in metadata else "wrong bearer token"

        async def deny_unary(request, context):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, why)

        async def deny_stream(request, context):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, why)
            yield  # pragma: no cover - makes this an async generator

        kw = {"request_deserializer": handler.request_deserializer,
              "response_serializer": handler.response_serializer}
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(deny_unary, **kw)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(deny_stream, **kw)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(deny_unary, **kw)
        return grpc.stream_stream_rpc_method_handler(deny_stream, **kw)


class StrictCodec(grpc.aio.ServerInterceptor):
    """A request that is not a valid protobuf of its type is INVALID_ARGUMENT (grpc would say UNKNOWN).
    Responses that are already serialised (``bytes``, e.g. cached level chunks) are sent as they are."""

    def __init__(self) -> None:
        self._wrapped: dict = {}  # the service's handler of a method -> its wrapped handler

    async def intercept_service(self, continuation, details):
        """Wrap the service's handlers so that undecodable requests get INVALID_ARGUMENT and
        pre-serialised ``bytes`` responses are sent unchanged.
        """
        handler = await continuation(details)
        if handler is None or not details.method.startswith(f"/{SERVICE_NAME}/"):
            return handler
        wrapped = self._wrapped.get(handler)  # one handler per method: wrapped once, not on every call
        if wrapped is None:
            wrapped = self._wrapped[handler] = self._wrap(handler, details.method)
        return wrapped

    @staticmethod
    def _wrap(handler, method: str):
        parse = handler.request_deserializer

        async def decode(raw: bytes, context):
            try:
                return parse(raw)
            except Exception as e:  # DecodeError and friends: a client's bytes, not our bug
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                    f"request: not a valid {method.rsplit('/', 1)[1]} message ({e})")

        serialize = handler.response_serializer

        def respond(message) -> bytes:
            return message if isinstance(message, bytes) else serialize(message)

        kw = {"request_deserializer": None, "response_serializer": respond}
        if handler.unary_unary:
            behaviour = handler.unary_unary

            async def unary(raw, context):
                return await behaviour(await decode(raw, context), context)

            return grpc.unary_unary_rpc_method_handler(unary, **kw)
        if handler.unary_stream:
            behaviour = handler.unary_stream

            async def stream(raw, context):
                async for item in behaviour(await decode(raw, context), context):
                    yield item

            return grpc.unary_stream_rpc_method_handler(stream, **kw)
        if handler.stream_unary:  # Learn: every message of the client's stream is decoded the same way
            behaviour = handler.stream_unary

            async def client_stream(raws, context):
                async def requests():
                    async for raw in raws:
                        yield await decode(raw, context)

                return await behaviour(requests(), context)

            return grpc.stream_unary_rpc_method_handler(client_stream, **kw)
        return handler


def message_options(cfg: ServeConfig) -> list[tuple[str, int]]:
    """gRPC channel options that cap sent and received messages at ``serve.max_message_mb``."""
    n = cfg.max_message_mb * 2**20
    return [("grpc.max_send_message_length", n), ("grpc.max_receive_message_length", n)]


async def start_server(service, cfg: ServeConfig, extra_handlers=()) -> tuple[grpc.aio.Server, int]:
    """Build, bind and start the server; returns it and the bound port (useful with port 0).
    ``extra_handlers``: generic handlers served alongside (the benchmark's raw-bytes baseline)."""
    check_bind(cfg)
    token = resolve_token(cfg)
    interceptors = ([BearerAuth(token)] if token else []) + [StrictCodec()]
    server = grpc.aio.server(interceptors=interceptors, options=message_options(cfg))
    pb_grpc.add_SharedMemoryServicer_to_server(service, server)
    if extra_handlers:
        server.add_generic_rpc_handlers(tuple(extra_handlers))
    status = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(status, server)
    reflection.enable_server_reflection([SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    if cfg.tls_cert:
        with open(cfg.tls_key, "rb") as k, open(cfg.tls_cert, "rb") as c:
            creds = grpc.ssl_server_credentials([(k.read(), c.read())])
        port = server.add_secure_port(cfg.address, creds)
    else:
        port = server.add_insecure_port(cfg.address)
    if port == 0:
        raise OSError(f"serve.address: could not bind {cfg.address}")
    await server.start()
    for name in ("", SERVICE_NAME):
        await status.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, port


class MemoryServer:
    """The service on its own event loop in a daemon thread (next to a run, or in tests)."""

    def __init__(self, make_service, cfg: ServeConfig, extra_handlers=()) -> None:
        self.make_service, self.cfg, self.extra = make_service, cfg, extra_handlers
        self.loop = asyncio.new_event_loop()
        self.port: int | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, name="swarm-serve", daemon=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.server, self.port = self.loop.run_until_complete(start_server(self.make_service(), self.cfg,
                                                                                    self.extra))
        except BaseException as e:  # reported to start()
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        self.loop.run_forever()

    def start(self) -> int:
        """Start serving; blocks until the port is bound and returns it. Re-raises a failed start."""
        self.thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error
        return self.port

    def stop(self, grace: float = 1.0) -> None:
        """Stop serving (in-flight calls get ``grace`` seconds) and end the event loop thread."""
        if self.port is None:
            return
        asyncio.run_coroutine_threadsafe(self.server.stop(grace), self.loop).result()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


class Follower:
    """Serves the newest live run under ``out_dir``, switching when a newer one starts (``swarm serve
    --follow``, what a cluster's head runs at boot). Without a live run every call is UNAVAILABLE."""

    def __init__(self, out_dir: str, make_service, poll_s: float = 5.0) -> None:
        self.out_dir, self.make_service, self.poll_s = out_dir, make_service, poll_s
        self.current: tuple[str, object] | None = None
        for name, kind in RPCS.items():
            setattr(self, name, self._delegate(name, kind))

    def _delegate(self, name: str, kind: str):
        async def unary(request, context):
            inner = await self._inner(context)
            return await getattr(inner, name)(request, context)

        async def stream(request, context):
            inner = await self._inner(context)
            async for item in getattr(inner, name)(request, context):
                yield item

        return unary if kind is Kind.UNARY else stream

    async def _inner(self, context):
        if self.current is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"no running swarm under {self.out_dir} yet")
        return self.current[1]

    async def watch_runs(self) -> None:
        """Every ``poll_s`` seconds, switch to the newest run under ``out_dir`` whose status is live; stop
        following one that ended or died (driver gone, heartbeat stale: said once, with the resume command)."""
        from swarm.rundir import latest_run

        dead_said = None
        while True:
            if self.current is not None and not (alive := RunDir(self.current[0]).liveness()).live:
                print(f"{self.current[0]} is {alive.describe()}; no longer following it", flush=True)
                self.current = None
            run = latest_run(self.out_dir)
            if run is not None and (self.current is None or self.current[0] != str(run)):
                try:
                    alive = RunDir(run).liveness()
                    if alive.live:
                        service = await asyncio.to_thread(self.make_service, run)
                        self.current = (str(run), service)
                        print(f"following {run}", flush=True)
                    elif alive.state == "dead" and dead_said != str(run):
                        print(f"{run} is {alive.describe()}: continue it with swarm run --resume {run}", flush=True)
                        dead_said = str(run)
                except Exception as e:  # its actors may not exist yet: try again on the next poll
                    print(f"not yet serving {run}: {type(e).__name__}: {e}", flush=True)
            await asyncio.sleep(self.poll_s)


def _serve_forever(make_service, cfg: ServeConfig, what: str, background=None, uses_ray: bool = True) -> None:
    """Start the service, say where, serve until Ctrl-C (running ``background()`` alongside), leave Ray."""

    async def main() -> None:
        server, port = await start_server(make_service(), cfg)
        host = cfg.address.rpartition(":")[0]
        print(f"serving {what} on {host}:{port}" + (" with a bearer token" if resolve_token(cfg) else "")
              + "; Ctrl-C stops", flush=True)
        task = asyncio.create_task(background()) if background else None
        try:
            await server.wait_for_termination()
        finally:  # Ctrl-C cancels this task: stop serving now (calls in flight get a second), not at loop close
            if task is not None:
                task.cancel()
            await server.stop(1.0)

    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        # started from a script or a test process that ignores SIGINT: Ctrl-C must still stop the service
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    finally:
        if uses_ray:
            import ray

            ray.shutdown()


def serve_follow(out_dir: str, overrides=()) -> None:
    """``swarm serve --follow``: serve whichever run under ``out_dir`` is newest and live."""
    from swarm.api.servicer import build_service
    from swarm.config import load_config
    from swarm.ray_session import join_ray

    serve_cfg = load_config("swarm", list(overrides)).serve  # validated like any config
    join_ray()

    def make_service(run_dir):
        run = RunDir(run_dir)
        return build_service(load_config(run.config), run.namespace)

    follower = Follower(out_dir, make_service)
    _serve_forever(lambda: follower, serve_cfg, f"the newest run under {out_dir}", follower.watch_runs)


def live_service(cfg, run: RunDir):
    """The service over ``run``'s live actors, or None with the reason why they cannot be reached (no Ray
    cluster to join, or no servers of this run in it): then the run is served from its checkpoints."""
    from swarm.api.servicer import build_service
    from swarm.ray_session import join_ray, run_ray_address

    try:
        join_ray(run.namespace, run_ray_address(run))
    except ConnectionError as e:
        return None, f"no Ray cluster to join ({str(e).splitlines()[0]})"
    try:
        return build_service(cfg, run.namespace), ""
    except ValueError:  # ray.get_actor: no such actor in the namespace
        import ray

        ray.shutdown()
        return None, f"its servers are not in Ray namespace {run.namespace}"


def offline_service(cfg, run: RunDir, why: str):
    """The read-only service over ``run``'s checkpoints and a line saying what is served and why."""
    from swarm.api.servicer import build_service

    service = build_service(cfg, run_dir=run.path)
    levels = service.levels
    versions = ", ".join(f"{n} v{v}" for n, v in levels.versions.items())
    note = f"{run.path} is {why}: serving it read-only from its checkpoints ({versions}; no Ray, no events)"
    return service, note + "".join(f"\n  warning: {w}" for w in levels.warnings)


def serve_run(run_dir, overrides=(), echo=print) -> None:
    """``swarm serve``: serve ``run_dir``'s run until Ctrl-C: its live actors over Ray while it runs,
    else (finished, stopped, or unreachable) its checkpoints read-only, saying which (``echo``)."""
    from swarm.config import load_config

    run = RunDir(run_dir).require_run()
    cfg = load_config(run.config, list(overrides))
    alive = run.liveness()  # a run marked live whose driver is gone is dead: served from its checkpoints
    state = "stopped" if alive.state == "none" else alive.state
    service, uses_ray = None, False
    if state in LIVE_STATES:
        service, why = live_service(cfg, run)
        uses_ray = service is not None
        why = f"marked {state} but {why}"
    else:
        why = alive.describe() if state == "dead" else state
    if service is None:
        service, note = offline_service(cfg, run, why)
        echo(note, flush=True)
        what = f"{run_dir} (from its checkpoints)"
    else:
        what = f"{run_dir} ({run.namespace}, live)"
    try:
        _serve_forever(lambda: service, cfg.serve, what, uses_ray=uses_ray)
    finally:
        if not uses_ray:
            service.levels.close()  # the read-only copy of the run's stores
