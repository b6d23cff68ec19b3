"""The supervisor feed: webhook delivery, retries and drops, the board's API and its CLI."""
from __future__ import annotations

import datetime as dt
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from coach import codec
from coach.errors import ConfigError
from coach.events import CallEnd, Level, Prompt, ScoredUtterance, Speaker, TrajectoryState, Trend, Utterance
from coach.supervisor import BoardServer, WebhookSink, check_url

TOKEN = "board-token-0123456789"


def security(t: float = 10.0, opened: bool = True) -> Prompt:
    return Prompt("call_security", t, opened, "Threat: call security now", 100, "critical", "threat")


def trajectory(t: float, state: Level = Level.ANGRY, trusted: bool = True) -> TrajectoryState:
    return TrajectoryState(Speaker.CUSTOMER, t, 2.2, -0.6, state, Trend.RISING, state, risk=0.7,
                           words_trusted=trusted)


class Receiver:
    """A stdlib HTTP server standing in for a webhook: records POSTs, answers ``status``."""

    def __init__(self, status: int = 200, delay: float = 0.0) -> None:
        self.status, self.delay = status, delay
        self.posts: list[tuple[dict, dict]] = []
        rec = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                rec.posts.append((json.loads(body), dict(self.headers)))
                time.sleep(rec.delay)
                self.send_response(rec.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def wait_for(cond, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.02)


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ----------------------------------------------------------------------------- webhook


def test_webhook_posts_critical_prompts_states_and_call_end(receiver):
    sink = WebhookSink(receiver.url, "desk-7", agent="Ana")
    sink.handle(security(10.0), 3.25)
    sink.handle(Prompt("apologize", 11.0, True, "Apologise", 70, "warn", "x"), 3.3)  # not for supervisors
    sink.handle(ScoredUtterance(Utterance(Speaker.CUSTOMER, 9.0, 10.0, "hello"), None), 3.3)
    sink.handle(trajectory(11.0), 3.4)
    sink.handle(trajectory(11.5), 3.5)  # same state: not sent again
    sink.handle(trajectory(12.0, trusted=False), 3.6)  # words now unreliable: sent
    sink.handle(security(13.0, opened=False), 3.7)
    sink.handle(CallEnd(14.0), 3.8)
    sink.close()
    assert sink.report().sent == 5 and sink.report().failed == sink.dropped == sink.abandoned == 0
    payloads = [p for p, _ in receiver.posts]
    assert [p["event"]["type"] for p in payloads] == ["prompt_open", "trajectory", "trajectory", "prompt_close",
                                                      "call_end"]
    first, headers = receiver.posts[0]
    assert set(first) == {"session", "agent", "event", "sent_at"}
    assert first["session"] == "desk-7" and first["agent"] == "Ana"
    assert first["event"] == codec.encode(security(10.0), 3.25)
    assert dt.datetime.fromisoformat(first["sent_at"]).tzinfo is not None
    assert headers["Content-Type"] == "application/json"


def test_webhook_retries_a_failing_server_a_bounded_number_of_times():
    slow_500 = Receiver(status=500, delay=0.3)
    try:
        sink = WebhookSink(slow_500.url, "desk-1", tries=3, backoff=0.01)
        t0 = time.perf_counter()
        sink.handle(security(), 1.0)
        sink.handle(security(11.0, opened=False), 1.1)  # the worker is busy retrying meanwhile
        sink.handle(CallEnd(12.0), 1.2)
        assert time.perf_counter() - t0 < 0.05  # handle() only enqueues
        wait_for(lambda: sink.failed == 3, timeout=10)
        assert len(slow_500.posts) == 9 and sink.attempts == 9  # 3 tries each, then given up
        assert sink.sent == 0 and sink.last_error == "HTTP 500"
        sink.close()
    finally:
        slow_500.close()


def test_webhook_counts_a_refused_connection():
    sink = WebhookSink(f"http://127.0.0.1:{closed_port()}/api/report", "desk-2", tries=3, backoff=0.01)
    t0 = time.perf_counter()
    sink.handle(security(), 1.0)
    assert time.perf_counter() - t0 < 0.05
    wait_for(lambda: sink.failed == 1)
    assert sink.attempts == 3 and "refused" in sink.last_error.lower()
    sink.close()


def test_webhook_does_not_retry_a_refusal():
    r = Receiver(status=422)
    try:
        sink = WebhookSink(r.url, "desk-3", tries=3, backoff=0.01)
        sink.handle(security(), 1.0)
        wait_for(lambda: sink.failed == 1)
        assert len(r.posts) == 1 and sink.attempts == 1
        sink.close()
    finally:
        r.close()


def test_webhook_drops_when_its_queue_is_full_and_close_is_bounded():
    hung = Receiver(delay=2.0)
    try:
        sink = WebhookSink(hung.url, "desk-4", maxsize=2, timeout=5.0, drain_s=0.3)
        t0 = time.perf_counter()
        for i in range(20):
            sink.handle(security(float(i)), float(i))
        assert time.perf_counter() - t0 < 0.05
        assert sink.dropped >= 17  # at most one in flight and two queued
        t0 = time.monotonic()
        sink.close()
        assert time.monotonic() - t0 < 1.0
        # The POST in flight may still finish; what was still queued is counted, never sent later.
        wait_for(lambda: sink.sent + sink.failed + sink.dropped + sink.abandoned == 20)
        assert sink.sent + sink.failed == 1 and sink.abandoned >= 1
    finally:
        hung.close()


@pytest.mark.parametrize("url", ["ftp://example.com/x", "127.0.0.1:8765/api/report", "", "http://", "file:///etc/x"])
def test_webhook_url_must_be_http(url):
    with pytest.raises(ConfigError) as info:
        WebhookSink(url, "desk")
    assert "\n" not in str(info.value) and "http" in str(info.value)
    assert check_url("https://board.example:8443/api/report") == "https://board.example:8443/api/report"


# ----------------------------------------------------------------------------- board


@pytest.fixture
def board():
    b = BoardServer().start()
    yield b
    b.stop()


def sessions(b: BoardServer, **kw) -> list[dict]:
    r = httpx.get(b.url + "api/sessions", **kw)
    assert r.status_code == 200
    return r.json()["sessions"]


def test_board_lists_sessions_and_their_open_alerts(board):
    assert board.web.address[0] == "127.0.0.1"
    sink = WebhookSink(board.url + "api/report", "desk-9", agent="Ben")
    calm = WebhookSink(board.url + "api/report", "desk-2")
    calm.handle(trajectory(1.0, Level.CALM), 0.5)
    sink.handle(trajectory(4.0), 1.0)
    sink.handle(security(5.0), 1.5)
    wait_for(lambda: sink.sent == 2 and calm.sent == 1)
    listed = sessions(board)
    assert [s["session"] for s in listed] == ["desk-9", "desk-2"]  # the open critical alert first
    s = listed[0]
    assert s["agent"] == "Ben" and s["status"] == "live" and s["critical"] is True
    assert [a["prompt"] for a in s["open"]] == ["call_security"] and s["state"]["state"] == "angry"
    page = httpx.get(board.url)
    assert page.status_code == 200 and 'id="sessions"' in page.text

    sink.handle(security(6.0, opened=False), 2.0)
    sink.handle(CallEnd(7.0), 2.5)
    sink.close()
    calm.close()
    s = next(x for x in sessions(board) if x["session"] == "desk-9")
    assert s["status"] == "ended" and s["open"] == [] and s["critical"] is False
    assert [a["type"] for a in s["alerts"]] == ["prompt_open", "prompt_close", "call_end"]


def _post(b: BoardServer, body, ctype: str = "application/json", **kw) -> int:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(b.url + "api/report", content=data, headers={"Content-Type": ctype}, **kw).status_code


def good(session: str = "desk-1", ev=None) -> dict:
    return {"session": session, "agent": None, "event": codec.encode(ev or security(), 1.0), "sent_at": "now"}


def test_board_refuses_bad_reports(board):
    assert _post(board, good()) == 202
    assert _post(board, b"{not json") == 400
    assert _post(board, b'{"session": "a", "event": {"type": "call_end", "t": NaN, "wall": 0}}') == 400
    assert _post(board, good(), ctype="text/plain") == 415
    assert _post(board, b'{"session": "' + b"x" * 40_000 + b'"}') == 413
    assert _post(board, [good()]) == 422
    assert _post(board, {"event": good()["event"]}) == 422
    assert _post(board, {**good(), "extra": 1}) == 422
    assert _post(board, good(session="")) == 422
    assert _post(board, good(session="a\x1b[31m")) == 422
    utter = ScoredUtterance(Utterance(Speaker.CUSTOMER, 0.0, 1.0, "private words"), None)
    assert _post(board, good(ev=utter)) == 422  # transcripts never go to the board
    assert _post(board, {**good(), "event": {"type": "prompt_open", "t": 1.0, "wall": 0.0}}) == 422
    assert board.received == 1 and board.refused == 11
    assert [s["session"] for s in sessions(board)] == ["desk-1"]


def test_board_memory_is_bounded_and_sessions_expire():
    now = [1000.0]
    b = BoardServer(max_sessions=3, max_alerts=4, ended_ttl=60, idle_ttl=600, monotonic=lambda: now[0])
    for i in range(5):
        b.ingest(good(f"desk-{i}"))
    assert sorted(s["session"] for s in b.sessions()) == ["desk-2", "desk-3", "desk-4"]
    for i in range(10):
        b.ingest(good("desk-4", security(float(i), opened=bool(i % 2))))
    assert len(next(s for s in b.sessions() if s["session"] == "desk-4")["alerts"]) == 4
    b.ingest(good("desk-3", CallEnd(5.0)))
    now[0] += 61  # the ended session goes first
    assert sorted(s["session"] for s in b.sessions()) == ["desk-2", "desk-4"]
    now[0] += 600  # then the silent ones
    assert b.sessions() == []


def test_board_with_token_and_webhook_token():
    with pytest.raises(ConfigError):
        BoardServer(host="0.0.0.0")
    b = BoardServer(token=TOKEN).start()
    try:
        assert httpx.get(b.url + "api/sessions").status_code == 403
        assert _post(b, good()) == 403
        without = WebhookSink(b.url + "api/report", "desk-x", tries=3, backoff=0.01)
        with_token = WebhookSink(b.url + "api/report", "desk-y", token=TOKEN)
        without.handle(security(), 1.0)
        with_token.handle(security(), 1.0)
        wait_for(lambda: without.failed == 1 and with_token.sent == 1)
        assert without.attempts == 1  # 403 is not retried
        assert [s["session"] for s in sessions(b, params={"token": TOKEN})] == ["desk-y"]
        without.close()
        with_token.close()
    finally:
        b.stop()


# ----------------------------------------------------------------------------- coach board

_RUN_CLI = """
import argparse, sys
from coach import cli
from coach.cli import board
build = cli.build_parser
def with_board():
    p = build()
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    if "board" not in sub.choices:
        board.register(sub)
    return p
cli.build_parser = with_board
sys.exit(cli.main(sys.argv[1:]))
"""


def test_cli_board_serves_until_ctrl_c():
    p = subprocess.Popen([sys.executable, "-c", _RUN_CLI, "board", "--port", "0"], stderr=subprocess.PIPE, text=True)
    try:
        line = p.stderr.readline()
        assert line.startswith("coach: board on http://127.0.0.1:"), line
        url = line.split()[3]
        assert httpx.get(url + "healthz").json() == {"ok": True}
        assert _post_url(url, good()) == 202
        p.send_signal(signal.SIGINT)
        assert p.wait(timeout=5) == 0
        rest = p.stderr.read()
        assert "Traceback" not in rest and "1 reports received" in rest
    finally:
        p.kill()
        p.wait()


def _post_url(url: str, body: dict) -> int:
    return httpx.post(url + "api/report", json=body).status_code


def test_cli_board_refuses_an_open_address_without_token():
    r = subprocess.run([sys.executable, "-c", _RUN_CLI, "board", "--host", "0.0.0.0"], check=False,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert r.stderr.startswith("coach: error: the board would listen on 0.0.0.0") and r.stderr.count("\n") == 1
