"""The dashboard's web server: Starlette on uvicorn, one page, its static files and a server-sent event stream.

Routes: ``/`` (the page), ``/static/*`` (its script and style, shipped in this package: no CDN, works
offline), ``/api/state`` (everything as one JSON document), ``/api/stream`` (server-sent events: a
snapshot, then every change as it happens), ``/login`` (only when a token is required).

Access: on a loopback address anyone on this machine may look. Any other address needs the run's
gRPC bearer token (``serve.token`` or ``$SWARM_TOKEN``, :func:`swarm.api.server.resolve_token`), else
the server refuses to start. A browser proves it once on ``/login`` and gets a random session cookie
(HttpOnly: the page's script cannot read it); scripts may send ``Authorization: Bearer <token>``. The
token itself is never sent to the browser.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
import threading
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from swarm.dashboard.feed import Feed, dumps

STATIC = Path(__file__).parent / "static"
DEFAULT_ADDRESS = "127.0.0.1:8700"
KEEPALIVE_S = 15.0
COOKIE = "swarm_dashboard"
LOGIN_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>swarm dashboard: sign in</title>
<link rel="stylesheet" href="/static/style.css"></head><body class="login"><form method="post" action="/login">
<h1>swarm dashboard</h1><p>This dashboard is served beyond this machine: enter the run's token
(<code>serve.token</code> or <code>$SWARM_TOKEN</code>).</p>{error}
<input type="password" name="token" autocomplete="current-password" autofocus>
<button type="submit">open</button></form></body></html>"""


def split_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (IPv6 in brackets) as ``(host, port)``; ``ValueError`` naming the address when malformed."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"dashboard address: expected HOST:PORT (e.g. {DEFAULT_ADDRESS}), got {address!r}")
    return host.strip("[]"), int(port)


def check_access(address: str, token: str | None) -> None:
    """Refuse (``ValueError``) to serve beyond this machine without a token."""
    from swarm.api.server import is_loopback

    host, _ = split_address(address)
    if not is_loopback(host) and not token:
        raise ValueError(f"dashboard address: {address} is not a loopback address; set serve.token or $SWARM_TOKEN "
                         "(the run's gRPC token) before exposing the dashboard")


def create_app(feed: Feed, token: str | None = None) -> Starlette:
    """The Starlette app over ``feed``; with ``token``, every route but ``/login`` and ``/static`` needs it
    (a session cookie from ``/login``, or ``Authorization: Bearer``)."""
    sessions: set[str] = set()

    def allowed(request: Request) -> bool:
        if token is None:
            return True
        bearer = request.headers.get("authorization", "")
        if bearer.startswith("Bearer ") and hmac.compare_digest(bearer[7:].encode(), token.encode()):
            return True
        return request.cookies.get(COOKIE, "") in sessions

    def denied(request: Request) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": "sign in at /login (the run's token)"}, status_code=401)
        return RedirectResponse("/login", status_code=303)

    async def index(request: Request) -> Response:
        if not allowed(request):
            return denied(request)
        return FileResponse(STATIC / "index.html", headers={"cache-control": "no-store"})

    async def login(request: Request) -> Response:
        if token is None:
            return RedirectResponse("/", status_code=303)
        error = ""
        if request.method == "POST":
            form = parse_qs((await request.body()).decode("utf-8", errors="replace"))
            given = (form.get("token") or [""])[0]
            if hmac.compare_digest(given.encode(), token.encode()):
                session = secrets.token_urlsafe(32)
                sessions.add(session)
                response = RedirectResponse("/", status_code=303)
                response.set_cookie(COOKIE, session, httponly=True, samesite="strict")
                return response
            error = '<p class="error">wrong token</p>'
        return HTMLResponse(LOGIN_PAGE.format(error=error), status_code=401 if error else 200)

    async def state(request: Request) -> Response:
        if not allowed(request):
            return denied(request)
        return Response(dumps(feed.snapshot()), media_type="application/json")

    async def stream(request: Request) -> Response:
        if not allowed(request):
            return denied(request)
        queue = feed.subscribe()

        async def events():
            try:
                yield f"data: {dumps(feed.snapshot())}\n\n"
                while True:
                    try:
                        message = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
                    except asyncio.TimeoutError:
                        yield ": keepalive\n\n"
                        continue
                    yield f"data: {dumps(message)}\n\n"
            finally:
                feed.unsubscribe(queue)

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"cache-control": "no-store", "x-accel-buffering": "no"})

    @asynccontextmanager
    async def lifespan(app):
        await feed.start()
        try:
            yield
        finally:
            await feed.stop()

    routes = [Route("/", index), Route("/login", login, methods=["GET", "POST"]), Route("/api/state", state),
              Route("/api/stream", stream), Mount("/static", StaticFiles(directory=STATIC), name="static")]
    return Starlette(routes=routes, lifespan=lifespan)


class DashboardServer:
    """The dashboard of one run on uvicorn in a daemon thread (``swarm run --dashboard``, tests).

    ``address``: ``HOST:PORT`` (port 0: any free one); ``token``: required beyond loopback (see the module
    doc); ``live`` and ``snippets``: as :class:`Feed`.
    """

    def __init__(self, run_dir, address: str = DEFAULT_ADDRESS, token: str | None = None, *,
                 live: bool | None = None, snippets: int = 3, poll_s: float = 0.2) -> None:
        import uvicorn

        check_access(address, token)
        self.host, port = split_address(address)
        self.feed = Feed(run_dir, live=live, snippets=snippets, poll_s=poll_s)
        config = uvicorn.Config(create_app(self.feed, token), host=self.host, port=port, log_level="warning",
                                lifespan="on", access_log=False, timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self.port: int | None = None
        self.thread = threading.Thread(target=self.server.run, name="swarm-dashboard", daemon=True)

    @property
    def url(self) -> str:
        """Where to open the page (no token in it)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start(self, timeout_s: float = 300.0) -> int:
        """Start serving; blocks until the port is bound (the feed has read the run) and returns it.
        ``RuntimeError`` when the server stopped before that (its error was logged)."""
        import time

        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the dashboard did not start on {self.host} (see the log above)")
            time.sleep(0.05)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self.port

    def stop(self) -> None:
        """Stop serving and wait for the thread (open pages see their stream end)."""
        self.server.should_exit = True
        self.thread.join(timeout=10)
