"""The supervisor feed: critical prompts go out as webhooks; ``coach board`` shows them.

Why a webhook and not a shared database: a supervisor needs to know *now* that an agent
is being threatened, from any number of desks, with nothing to install beyond one
URL. :class:`WebhookSink` forwards only what a supervisor acts on (the critical prompts
opening and closing, the customer's state when it changes, the call's end) as small
JSON POSTs from its own thread, so a slow or dead receiver never stalls the coach: a
bounded queue drops (and counts) when full, and each POST is tried a bounded number of
times with exponential backoff. :class:`BoardServer` is a receiver for those POSTs with
a live page listing the sessions; it shares the overlay's server code and token rule.

Payload (one POST per event): ``{"session": str, "agent": str | null, "event": <a
coach.codec event>, "sent_at": ISO time}``.
"""
# No ``from __future__ import annotations``: FastAPI reads the board's endpoint
# signatures at runtime, and ``Request`` is imported inside ``_app`` (no web stack at import).
import collections
import datetime as _dt
import http.client
import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Callable, Iterable
from urllib.parse import urlsplit

from . import codec
from .errors import ConfigError
from .events import CallEnd, Event, Prompt, Speaker, TrajectoryState

log = logging.getLogger("coach.supervisor")

CRITICAL_PROMPTS = frozenset({"call_security", "set_boundary", "end_or_escalate"})
_MAX_ID = 128
_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}


def check_url(url: str) -> str:
    """An absolute http(s) URL with a host, or a one-line ConfigError."""
    parts = urlsplit(str(url).strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"supervisor URL {url!r} is not an http:// or https:// URL",
                          "pass e.g. --supervisor http://127.0.0.1:8765/api/report")
    return parts.geturl()


def _check_id(value: str, what: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > _MAX_ID or not value.isprintable():
        raise ConfigError(f"the {what} {value!r} is empty, too long or has control characters",
                          f"use up to {_MAX_ID} printable characters")
    return value


def _now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirected POST would silently become a GET without the alert: fail instead."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@dataclass(frozen=True)
class WebhookReport:
    sent: int
    failed: int  # given up after the last try, or refused by the receiver (4xx)
    dropped: int  # the queue was full
    abandoned: int  # still queued or retrying when the sink closed
    attempts: int
    last_error: str | None


class WebhookSink:
    """Bus sink posting supervisor alerts: ``bus.add(WebhookSink(url, session_id), maxsize=...)``.

    ``handle`` only filters and enqueues; a worker thread posts. ``close`` gives the
    queue ``drain_s`` seconds (so ``call_end`` usually goes out), then abandons the rest.
    Proxies from the environment are not used: the board is on the call centre's LAN.
    """

    name = "supervisor"

    def __init__(self, url: str, session_id: str, agent: str | None = None, *, token: str | None = None,
                 prompts: Iterable[str] = CRITICAL_PROMPTS, states: bool = True, timeout: float = 3.0,
                 tries: int = 3, backoff: float = 0.5, max_backoff: float = 4.0, maxsize: int = 256,
                 drain_s: float = 1.0, opener: urllib.request.OpenerDirector | None = None) -> None:
        self.url = check_url(url)
        self.session_id = _check_id(session_id, "session id")
        self.agent = None if agent is None else _check_id(agent, "agent name")
        self.prompts = frozenset(prompts)
        self.states = states
        self.timeout, self.tries, self.backoff, self.max_backoff = timeout, max(1, tries), backoff, max_backoff
        self.drain_s = drain_s
        self.headers = {"Content-Type": "application/json", "User-Agent": "coach-supervisor/1"}
        if token:
            self.headers["X-Coach-Token"] = token
        self._opener = opener or urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect)
        self.sent = self.failed = self.dropped = self.abandoned = self.attempts = 0
        self.last_error: str | None = None
        self._last_state: tuple | None = None
        self._q: queue.Queue = queue.Queue(maxsize=maxsize)
        self._closing = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="coach-supervisor", daemon=True)
        self._thread.start()

    # -- the bus side: filter and enqueue, never wait
    def wants(self, ev: Event) -> bool:
        if isinstance(ev, Prompt):
            return ev.prompt in self.prompts or ev.severity == "critical"
        if isinstance(ev, CallEnd):
            return True
        if self.states and isinstance(ev, TrajectoryState) and ev.speaker == Speaker.CUSTOMER:
            key = (ev.state, ev.words_trusted)
            if key != self._last_state:
                self._last_state = key
                return True
        return False

    def handle(self, ev: Event, wall: float) -> None:
        if not self.wants(ev):
            return
        obj = codec.encode(ev, wall)
        try:
            self._q.put_nowait({"session": self.session_id, "agent": self.agent, "event": obj})
        except queue.Full:
            self.dropped += 1
            if self.dropped == 1:
                log.warning("supervisor webhook %s is behind; dropping alerts", self.url)

    def close(self) -> None:
        self._closing.set()
        self._thread.join(self.drain_s)
        self._stop.set()
        self._thread.join(0.2)

    def report(self) -> WebhookReport:
        return WebhookReport(self.sent, self.failed, self.dropped, self.abandoned, self.attempts, self.last_error)

    # -- the worker side
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                payload = self._q.get(timeout=0.05)
            except queue.Empty:
                if self._closing.is_set():
                    break
                continue
            self._deliver(payload)
        while True:
            try:
                self._q.get_nowait()
            except queue.Empty:
                break
            self.abandoned += 1

    def _post(self, payload: dict) -> None:
        body = json.dumps({**payload, "sent_at": _now_iso()}, allow_nan=False, ensure_ascii=False).encode()
        req = urllib.request.Request(self.url, data=body, headers=self.headers, method="POST")
        with self._opener.open(req, timeout=self.timeout) as resp:
            resp.read(4096)

    def _deliver(self, payload: dict) -> None:
        for attempt in range(1, self.tries + 1):
            self.attempts += 1
            try:
                self._post(payload)
                self.sent += 1
                return
            except urllib.error.HTTPError as e:
                self.last_error = f"HTTP {e.code}"
                retry = e.code in _RETRY_STATUS
            except (OSError, ValueError, http.client.HTTPException) as e:  # refused, unreachable, timeout, bad TLS
                reason = getattr(e, "reason", None) or e
                self.last_error = f"{type(reason).__name__}: {reason}" if not isinstance(reason, str) else reason
                retry = True
            if not retry or attempt == self.tries:
                break
            if self._stop.wait(min(self.max_backoff, self.backoff * 2 ** (attempt - 1))):
                self.abandoned += 1
                return
        self.failed += 1
        log.warning("supervisor webhook %s: %s alert not delivered after %d tries (%s)",
                    self.url, payload["event"].get("type"), attempt, self.last_error)


# ----------------------------------------------------------------------------- the board


_BOARD_TYPES = (Prompt, CallEnd, TrajectoryState)


class ReportError(ValueError):
    """A POSTed report that is not a webhook payload (answered with a 4xx)."""

    def __init__(self, status: int, msg: str) -> None:
        super().__init__(msg)
        self.status = status


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_report(body: bytes) -> dict:
    """A checked, normalised webhook payload from a POST body, or :class:`ReportError`."""
    try:
        obj = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ReportError(400, f"body is not JSON ({type(e).__name__})") from None
    if not isinstance(obj, dict):
        raise ReportError(422, "body must be a JSON object")
    for key in ("session", "event"):
        if key not in obj:
            raise ReportError(422, f"missing field {key!r}")
    extra = set(obj) - {"session", "agent", "event", "sent_at"}
    if extra:
        raise ReportError(422, f"unknown fields {sorted(extra)}")
    sess, agent, sent_at = obj["session"], obj.get("agent"), obj.get("sent_at")
    try:
        _check_id(sess, "session")
        if agent is not None:
            _check_id(agent, "agent")
    except ConfigError as e:
        raise ReportError(422, e.cause) from None
    if sent_at is not None and not (isinstance(sent_at, str) and len(sent_at) <= 64):
        raise ReportError(422, "sent_at must be a short string")
    try:
        ev, wall = codec.decode(obj["event"])
    except codec.EventsError as e:
        raise ReportError(422, f"event: {e.cause}") from None
    if not isinstance(ev, _BOARD_TYPES):
        raise ReportError(422, f"event type {obj['event'].get('type')!r} is not a supervisor alert")
    return {"session": sess, "agent": agent, "event": codec.encode(ev, wall), "sent_at": sent_at}


class _Session:
    def __init__(self, sid: str, now: float, mono: float, max_alerts: int) -> None:
        self.id, self.agent = sid, None
        self.first_seen = self.last_seen = now
        self.mono = mono
        self.ended = False
        self.t = 0.0
        self.open: dict[str, dict] = {}
        self.alerts: collections.deque = collections.deque(maxlen=max_alerts)
        self.state: dict | None = None

    def apply(self, rep: dict, now: float, mono: float) -> None:
        ev = rep["event"]
        self.agent = rep["agent"] or self.agent
        self.last_seen, self.mono = now, mono
        self.t = max(self.t, ev["t"] or 0.0)
        kind = ev["type"]
        if kind == "trajectory":
            self.state = {k: ev.get(k) for k in ("t", "state", "trend", "peak", "escalation", "risk", "words_trusted")}
            return
        self.alerts.append(ev)
        if kind == "prompt_open":
            self.open[ev["prompt"]] = ev
        elif kind == "prompt_close":
            self.open.pop(ev["prompt"], None)
        self.ended = kind == "call_end"
        if self.ended:
            self.open.clear()

    def view(self, now: float) -> dict:
        opened = sorted(self.open.values(), key=lambda e: -e["priority"])
        return {"session": self.id, "agent": self.agent, "status": "ended" if self.ended else "live",
                "critical": any(e["severity"] == "critical" for e in opened), "t": self.t,
                "first_seen": self.first_seen, "last_seen": self.last_seen,
                "age_s": round(max(0.0, now - self.last_seen), 1), "state": self.state,
                "open": opened, "alerts": list(self.alerts)}


class Served:
    """Lifecycle of a server object that owns a :class:`WebServer` as ``self.web``."""

    web: Any  # coach.overlay.WebServer (imported lazily: no web stack at import)

    @property
    def port(self) -> int:
        return self.web.port

    @property
    def url(self) -> str:
        return self.web.url

    def start(self):
        self.web.start()
        return self

    def stop(self, timeout: float = 1.0) -> None:
        self.web.stop(timeout)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class BoardServer(Served):
    """``coach board``: receives webhook reports at ``POST /api/report`` and shows the sessions.

    Memory is bounded: at most ``max_sessions`` (the stalest ended one, else the stalest,
    makes room) and ``max_alerts`` recent alerts each; ended sessions go after
    ``ended_ttl`` seconds, silent ones after ``idle_ttl``. Bodies over ``max_body`` bytes
    are refused (413), non-JSON ones 400/415, wrong shapes 422.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, token: str | None = None, *,
                 max_sessions: int = 500, max_alerts: int = 50, ended_ttl: float = 900.0,
                 idle_ttl: float = 7200.0, max_body: int = 32 * 1024,
                 clock: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic) -> None:
        from .overlay import WebServer
        self.max_sessions, self.max_alerts = max_sessions, max_alerts
        self.ended_ttl, self.idle_ttl, self.max_body = ended_ttl, idle_ttl, max_body
        self.clock, self.monotonic = clock, monotonic
        self.received = self.refused = 0
        self._lock = threading.Lock()
        self._sessions: dict[str, _Session] = {}
        self.web = WebServer(self._app(), host, port, token, what="the board")

    def ingest(self, rep: dict) -> None:
        """Apply one payload already checked by :func:`parse_report`."""
        now, mono = self.clock(), self.monotonic()
        with self._lock:
            self._expire(mono)
            s = self._sessions.get(rep["session"])
            if s is None:
                if len(self._sessions) >= self.max_sessions:
                    self._evict()
                s = self._sessions[rep["session"]] = _Session(rep["session"], now, mono, self.max_alerts)
            s.apply(rep, now, mono)
            self.received += 1

    def sessions(self) -> list[dict]:
        """Sessions with open critical alerts first, then live ones, then the most recent."""
        now = self.clock()
        with self._lock:
            self._expire(self.monotonic())
            views = [s.view(now) for s in self._sessions.values()]
        return sorted(views, key=lambda v: (not v["critical"], v["status"] != "live", -v["last_seen"]))

    def _expire(self, mono: float) -> None:
        for sid, s in list(self._sessions.items()):
            if mono - s.mono > (self.ended_ttl if s.ended else self.idle_ttl):
                del self._sessions[sid]

    def _evict(self) -> None:
        victim = min(self._sessions.values(), key=lambda s: (not s.ended, s.mono))
        del self._sessions[victim.id]

    def _app(self):
        from fastapi import FastAPI, Request
        from fastapi.responses import JSONResponse

        from .overlay import html
        app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

        def refuse(status: int, msg: str) -> JSONResponse:
            self.refused += 1
            return JSONResponse({"error": msg}, status_code=status)

        @app.get("/")
        async def index():
            return html("board.html")

        @app.get("/healthz")
        async def healthz() -> dict:
            return {"ok": True}

        @app.get("/api/sessions")
        async def api_sessions() -> JSONResponse:
            return JSONResponse({"now": self.clock(), "sessions": self.sessions()},
                                headers={"Cache-Control": "no-store"})

        @app.post("/api/report")
        async def api_report(request: Request) -> JSONResponse:
            ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if ctype != "application/json":
                return refuse(415, "content type must be application/json")
            try:
                declared = int(request.headers.get("content-length", "0"))
            except ValueError:
                return refuse(400, "bad content-length")
            if declared > self.max_body:
                return refuse(413, f"body over {self.max_body} bytes")
            body = bytearray()
            async for chunk in request.stream():
                body += chunk
                if len(body) > self.max_body:
                    return refuse(413, f"body over {self.max_body} bytes")
            try:
                rep = parse_report(bytes(body))
            except ReportError as e:
                return refuse(e.status, str(e))
            self.ingest(rep)
            return JSONResponse({"ok": True}, status_code=202)

        return app


__all__ = ["CRITICAL_PROMPTS", "BoardServer", "ReportError", "WebhookReport", "WebhookSink", "check_url",
           "parse_report"]
