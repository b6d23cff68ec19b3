"""The agent's overlay: a small local web page beside the softphone, fed by a bus sink.

Why a local web server: a browser window is the one UI every agent desk already has,
and a WebSocket pushes a prompt within milliseconds. The server runs uvicorn in a
daemon thread (no signal handlers: the CLI owns SIGINT/SIGTERM) and keeps a small
snapshot (open prompts, recent transcript, the customer's recent trajectory,
``call_end``) that every new WebSocket client receives first, so a reload or a
reconnect shows the current state at once.

Safety: it listens on 127.0.0.1 unless told otherwise, and any other address needs a
token (16+ characters) that the page, the state and the WebSocket then all require.
On loopback, the ``Host`` header must name loopback (DNS rebinding) and a browser's
``Origin`` must be the page's own (another web site must not read the call).

:class:`WebServer` (binding, guard, thread) is shared with the supervisor board.
"""
from __future__ import annotations

import asyncio
import collections
import hmac
import ipaddress
import json
import logging
import socket
import threading
import time
from importlib import resources as _res
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

import uvicorn
from fastapi import FastAPI, WebSocket
from fastapi.responses import HTMLResponse, JSONResponse

from . import codec
from .errors import CoachError, ConfigError
from .events import Event
from .supervisor import Served

log = logging.getLogger("coach.overlay")

MIN_TOKEN = 16
SNAPSHOT_VERSION = 1
_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}
_PAGE_HEADERS = {
    # Everything is inline and local: nothing may load from elsewhere.
    "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                               "connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
                               "base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and the name ``localhost``."""
    h = host.strip().strip("[]").lower()
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def check_binding(host: str, token: str | None, what: str = "the overlay") -> None:
    """Refuse a non-loopback address without a token, and any short token."""
    if token is not None and len(token) < MIN_TOKEN:
        raise ConfigError(f"the token for {what} is {len(token)} characters; at least {MIN_TOKEN} are needed",
                          "use a longer random one, e.g. from "
                          "`python -c 'import secrets; print(secrets.token_urlsafe())'`")
    if not is_loopback(host) and not token:
        raise ConfigError(f"{what} would listen on {host}, beyond this machine, without a token",
                          "keep the default 127.0.0.1, or pass --token with 16+ random characters")


def page(name: str) -> str:
    """A page shipped in ``coach/web`` (package data)."""
    return _res.files("coach").joinpath("web", name).read_text(encoding="utf-8")


def html(name: str) -> HTMLResponse:
    return HTMLResponse(page(name), headers=_PAGE_HEADERS)


# ----------------------------------------------------------------------------- guard


def _hostname(hostport: str) -> str:
    return (urlsplit(f"//{hostport}").hostname or "").lower()


class _Guard:
    """Pure ASGI middleware: token, Host and Origin checks for HTTP and WebSocket alike."""

    def __init__(self, app: Callable, token: str | None, loopback: bool, open_paths: frozenset[str]) -> None:
        self.app, self.token, self.loopback, self.open_paths = app, token, loopback, open_paths

    def _refusal(self, scope: dict) -> str | None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = headers.get("host", "")
        if self.loopback and _hostname(host) not in _LOOPBACK_NAMES:
            return "host not allowed"
        origin = headers.get("origin")
        if origin is not None and (origin == "null" or urlsplit(origin).netloc.lower() != host.lower()):
            return "cross-origin request refused"
        if self.token is None or scope.get("path") in self.open_paths:
            return None
        given = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [""])[0]
        given = given or headers.get("x-coach-token", "")
        auth = headers.get("authorization", "")
        if not given and auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            return "token missing or wrong"
        return None

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        why = self._refusal(scope)
        if why is None:
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":  # closing before accept answers HTTP 403
            await receive()
            await send({"type": "websocket.close", "code": 1008})
            return
        body = json.dumps({"error": why}).encode()
        await send({"type": "http.response.start", "status": 403,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


# ----------------------------------------------------------------------------- server thread


class _Uvicorn(uvicorn.Server):
    """uvicorn without signal handling: the CLI decides when to stop."""

    def install_signal_handlers(self) -> None:  # older uvicorn
        pass

    def capture_signals(self):  # newer uvicorn
        import contextlib
        return contextlib.nullcontext()


def _listen(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                          flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
    except (OSError, UnicodeError) as e:
        raise ConfigError(f"cannot resolve {host!r} to listen on ({e})", "pass an IP address or a local name") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(64)
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port} ({e.strerror or e})",
                          "choose another --port, or stop what is using it") from None
    return sock


def _ws_impl() -> str:
    """The sans-I/O websockets protocol where this uvicorn has it (no deprecation noise)."""
    from uvicorn.config import WS_PROTOCOLS
    return "websockets-sansio" if "websockets-sansio" in WS_PROTOCOLS else "websockets"


class WebServer:
    """A FastAPI app served by uvicorn on its own daemon thread and event loop."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0, token: str | None = None, *,
                 what: str = "the server", open_paths: tuple[str, ...] = ("/healthz",)) -> None:
        check_binding(host, token, what)
        if not 0 <= int(port) <= 65535:
            raise ConfigError(f"port {port} is out of range", "pass a port from 1 to 65535, or 0 for any free port")
        self.host, self.token, self.what = host, token, what
        self.port = int(port)
        self.app = _Guard(app, token, is_loopback(host), frozenset(open_paths))
        self.loop: asyncio.AbstractEventLoop | None = None
        self._server: _Uvicorn | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    @property
    def url(self) -> str:
        h = self.host if ":" not in self.host else f"[{self.host}]"
        return f"http://{h}:{self.port}/"

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def address(self) -> tuple:
        """The listening socket's own address (what the kernel bound)."""
        if self._sock is None:
            raise RuntimeError("not started")
        return self._sock.getsockname()

    def start(self, timeout: float = 10.0) -> "WebServer":
        """Listen, serve on a daemon thread, and return once requests are answered."""
        if self._thread is not None:
            return self
        self._sock = _listen(self.host, self.port)
        self.port = self._sock.getsockname()[1]
        config = uvicorn.Config(self.app, lifespan="off", log_config=None, log_level="warning",
                                access_log=False, loop="asyncio", ws=_ws_impl(),
                                timeout_graceful_shutdown=0.3, ws_ping_interval=10, ws_ping_timeout=10)
        self._server = _Uvicorn(config)
        self._thread = threading.Thread(target=self._run, name=f"coach-web-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise CoachError(f"{self.what} did not start on {self.url}",
                                 "see the log above, or choose another --port")
            time.sleep(0.01)
        return self

    def _run(self) -> None:
        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            await self._server.serve(sockets=[self._sock])  # type: ignore[union-attr]
        try:
            asyncio.run(main())
        except BaseException as e:  # noqa: BLE001 - a dying server thread is logged, not raised
            if not isinstance(e, SystemExit):
                log.error("%s stopped: %s", self.what, e)
        finally:
            self.loop = None

    def call_soon(self, fn: Callable, *args: Any) -> None:
        """Run ``fn(*args)`` on the server's loop; never blocks, dropped if it is not running."""
        loop = self.loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(fn, *args)
            except RuntimeError:  # the loop closed meanwhile
                pass

    def stop(self, timeout: float = 1.0) -> None:
        """Close connections and the socket; returns within about ``timeout`` seconds."""
        srv, th = self._server, self._thread
        if srv is not None:
            srv.should_exit = True
        if th is not None:
            th.join(timeout * 0.7)
            if th.is_alive() and srv is not None:
                srv.force_exit = True
                th.join(timeout * 0.3)
        if self._sock is not None:
            self._sock.close()
        self._thread = None
        self._server = None

    def __enter__(self) -> "WebServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ----------------------------------------------------------------------------- the overlay


class _Snapshot:
    """What a new client needs to show the current state (bounded, JSON-ready)."""

    def __init__(self, transcript: int = 20, series: int = 120) -> None:
        self.prompts: dict[str, dict] = {}
        self.transcript: collections.deque = collections.deque(maxlen=transcript)
        self.partials: dict[str, dict] = {}
        self.series: collections.deque = collections.deque(maxlen=series)
        self.trajectory: dict | None = None
        self.call_end: dict | None = None

    def apply(self, obj: dict) -> None:
        kind = obj.get("type")
        if kind == "prompt_open":
            self.prompts.pop(obj["prompt"], None)
            self.prompts[obj["prompt"]] = obj
        elif kind == "prompt_close":
            self.prompts.pop(obj["prompt"], None)
        elif kind == "utterance":
            self.transcript.append(obj)
            self.partials.pop(obj["speaker"], None)
        elif kind == "partial":
            self.partials[obj["speaker"]] = obj
        elif kind == "trajectory" and obj.get("speaker") == "customer":
            self.trajectory = obj
            self.series.append({k: obj.get(k) for k in ("t", "escalation", "risk", "arousal")})
        elif kind == "call_end":
            self.call_end = obj
            self.partials.clear()

    def message(self, seq: int) -> dict:
        return {"type": "snapshot", "version": SNAPSHOT_VERSION, "seq": seq,
                "prompts": list(self.prompts.values()), "transcript": list(self.transcript),
                "partials": list(self.partials.values()), "series": list(self.series),
                "trajectory": self.trajectory, "call_end": self.call_end}


class _Client:
    def __init__(self, since: int, maxsize: int) -> None:
        self.since = since  # messages up to this seq are in the client's snapshot
        self.q: asyncio.Queue = asyncio.Queue(maxsize=maxsize)
        self.dropped = 0


class OverlayServer(Served):
    """The overlay page, ``/api/state``, ``/healthz`` and the ``/ws`` push channel.

    ``publish(obj)`` takes a codec-encoded event from any thread and never waits on a
    client: each client has a bounded queue that drops its oldest message when full.
    ``prompt_log`` records, for benchmarks, when each ``prompt_open`` was queued to
    the clients, on ``clock`` (give it the bus's ``wall`` to compare with event walls).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, token: str | None = None, *,
                 client_queue: int = 256, transcript: int = 20, series: int = 120,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.client_queue = client_queue
        self.clock = clock
        self.dropped = 0  # messages dropped for slow clients, all clients together
        self.prompt_log: collections.deque = collections.deque(maxlen=10_000)
        self._lock = threading.Lock()
        self._seq = 0
        self._snap = _Snapshot(transcript, series)
        self._dims = (transcript, series)
        self._clients: set[_Client] = set()
        self.web = WebServer(self._app(), host, port, token, what="the overlay")

    @property
    def clients(self) -> int:
        return len(self._clients)

    # -- state
    def state(self) -> dict:
        with self._lock:
            return self._snap.message(self._seq)

    def publish(self, obj: dict) -> None:
        """Add one encoded event to the snapshot and push it to every client (any thread)."""
        text = json.dumps(obj, allow_nan=False, ensure_ascii=False)
        with self._lock:
            self._seq += 1
            seq = self._seq
            self._snap.apply(obj)
        self.web.call_soon(self._fanout, seq, text, obj if obj.get("type") == "prompt_open" else None)

    def reset(self) -> None:
        """Forget the call (a new call on the same page); clients get an empty snapshot."""
        with self._lock:
            self._seq += 1
            seq = self._seq
            self._snap = _Snapshot(*self._dims)
            msg = self._snap.message(seq)
        self.web.call_soon(self._fanout, seq, json.dumps(msg), None)

    def _fanout(self, seq: int, text: str, opened: dict | None) -> None:
        """On the loop: queue ``text`` for every client whose snapshot predates it."""
        n = 0
        for c in list(self._clients):
            if c.since >= seq:
                continue
            if c.q.full():
                c.q.get_nowait()
                c.dropped += 1
                self.dropped += 1
            c.q.put_nowait(text)
            n += 1
        if opened is not None:
            self.prompt_log.append({"prompt": opened["prompt"], "t": opened["t"], "wall": opened["wall"],
                                    "broadcast": self.clock(), "clients": n})

    # -- app
    def _app(self) -> FastAPI:
        app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

        @app.get("/")
        async def index() -> HTMLResponse:
            return html("overlay.html")

        @app.get("/healthz")
        async def healthz() -> dict:
            return {"ok": True, "clients": self.clients}

        @app.get("/api/state")
        async def api_state() -> JSONResponse:
            return JSONResponse(self.state(), headers={"Cache-Control": "no-store"})

        @app.websocket("/ws")
        async def ws(sock: WebSocket) -> None:
            await sock.accept()
            with self._lock:
                snap = self._snap.message(self._seq)
                client = _Client(self._seq, self.client_queue)
                self._clients.add(client)
            try:
                await sock.send_text(json.dumps(snap, allow_nan=False, ensure_ascii=False))

                async def pump() -> None:
                    while True:
                        await sock.send_text(await client.q.get())

                async def drain() -> None:  # client messages are ignored; this notices a disconnect
                    while (await sock.receive())["type"] != "websocket.disconnect":
                        pass

                tasks = [asyncio.ensure_future(pump()), asyncio.ensure_future(drain())]
                try:
                    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for t in tasks:
                        t.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
            except Exception as e:  # noqa: BLE001 - a client that went away is not an error
                log.debug("overlay client left: %s", e)
            finally:
                self._clients.discard(client)

        return app


class OverlaySink:
    """Bus sink feeding an :class:`OverlayServer`: ``bus.add(OverlaySink(server), maxsize=...)``.

    ``close()`` leaves the server running, so the page keeps showing the call's end;
    whoever started the server stops it.
    """

    name = "overlay"

    def __init__(self, server: OverlayServer) -> None:
        self.server = server

    def handle(self, ev: Event, wall: float) -> None:
        obj = codec.encode(ev, wall)
        if obj is not None:
            self.server.publish(obj)

    def close(self) -> None:
        pass


__all__ = ["MIN_TOKEN", "OverlayServer", "OverlaySink", "WebServer", "check_binding", "html", "is_loopback"]
