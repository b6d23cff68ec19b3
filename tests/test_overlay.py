"""The overlay server: binding and token rule, snapshot then live events, slow clients, stop."""
from __future__ import annotations

import base64
import json
import os
import socket
import time

import httpx
import pytest
from websockets.sync.client import connect

from coach.bus import Bus
from coach.errors import ConfigError
from coach.events import CallEnd, Level, Partial, Prompt, ScoredUtterance, Speaker, TrajectoryState, Trend, Utterance
from coach.overlay import OverlayServer, OverlaySink

TOKEN = "t0ken-with-enough-chars"


def security(t: float = 10.0, opened: bool = True) -> Prompt:
    return Prompt("call_security", t, opened, "Threat: call security now", 100, "critical", "threat")


def utterance(text: str, t: float, speaker: Speaker = Speaker.CUSTOMER) -> ScoredUtterance:
    return ScoredUtterance(Utterance(speaker, t - 1.0, t, text), None)


def trajectory(t: float, trusted: bool = True) -> TrajectoryState:
    return TrajectoryState(Speaker.CUSTOMER, t, 2.1, -0.6, Level.ANGRY, Trend.RISING, Level.ANGRY,
                           risk=0.7, arousal=0.5, words_trusted=trusted)


@pytest.fixture
def server():
    s = OverlayServer().start()
    yield s
    s.stop()


def ws_url(s: OverlayServer, token: str | None = None) -> str:
    return f"ws://127.0.0.1:{s.port}/ws" + (f"?token={token}" if token else "")


def recv(ws, timeout: float = 3.0) -> dict:
    return json.loads(ws.recv(timeout=timeout))


def _other_ipv4() -> str | None:
    """A non-loopback address of this machine, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        try:
            u.connect(("10.255.255.255", 1))  # no packet is sent; this only picks a route
            ip = u.getsockname()[0]
        except OSError:
            return None
    return None if ip.startswith("127.") or ip == "0.0.0.0" else ip


def test_binds_to_loopback_only_by_default(server):
    assert server.web.address[0] == "127.0.0.1"
    assert server.url == f"http://127.0.0.1:{server.port}/"
    assert httpx.get(server.url + "healthz").json()["ok"] is True
    ip = _other_ipv4()
    if ip is not None:  # not listening on the machine's other address
        with pytest.raises(OSError):
            socket.create_connection((ip, server.port), timeout=1).close()


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "coach.example.com"])
def test_non_loopback_needs_a_token(host):
    with pytest.raises(ConfigError, match="without a token"):
        OverlayServer(host=host)
    OverlayServer(host=host, token=TOKEN)  # allowed with one (not started)


def test_short_token_is_refused():
    with pytest.raises(ConfigError, match="at least 16"):
        OverlayServer(token="short")


def test_token_is_required_by_page_state_and_websocket():
    s = OverlayServer(token=TOKEN).start()
    try:
        base = s.url
        for path in ("", "api/state", "?token=wrong-token-but-long-enough"):
            assert httpx.get(base + path).status_code == 403, path
        with pytest.raises(Exception) as info:
            connect(ws_url(s)).close()
        assert "403" in str(info.value)
        assert httpx.get(base + f"?token={TOKEN}").status_code == 200
        assert httpx.get(base + "api/state", headers={"X-Coach-Token": TOKEN}).status_code == 200
        assert httpx.get(base + "api/state", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        assert httpx.get(base + "healthz").status_code == 200  # liveness needs no secret
        with connect(ws_url(s, TOKEN)) as ws:
            assert recv(ws)["type"] == "snapshot"
    finally:
        s.stop()


def test_foreign_host_and_origin_are_refused(server):
    # DNS rebinding: a page at evil.example resolving to 127.0.0.1 sends its own Host.
    assert httpx.get(server.url, headers={"Host": "evil.example"}).status_code == 403
    page = httpx.get(server.url)
    assert page.status_code == 200 and "default-src 'none'" in page.headers["content-security-policy"]
    with pytest.raises(Exception) as info:
        connect(ws_url(server), origin="http://evil.example").close()
    assert "403" in str(info.value)
    with connect(ws_url(server), origin=f"http://127.0.0.1:{server.port}") as ws:
        assert recv(ws)["type"] == "snapshot"


def test_websocket_gets_snapshot_then_live_events(server):
    sink = OverlaySink(server)
    sink.handle(security(10.0), 1.5)
    sink.handle(utterance("get out of my house", 9.0), 1.4)
    with connect(ws_url(server)) as ws:
        snap = recv(ws)
        assert snap["type"] == "snapshot" and snap["version"] == 1
        assert [p["prompt"] for p in snap["prompts"]] == ["call_security"]
        assert snap["transcript"][0]["text"] == "get out of my house"
        sink.handle(Prompt("apologize", 11.0, True, "Acknowledge and apologise", 70, "warn", "angry"), 2.0)
        msg = recv(ws)
        assert msg == {"type": "prompt_open", "t": 11.0, "wall": 2.0, "speaker": "agent", "prompt": "apologize",
                       "text": "Acknowledge and apologise", "priority": 70, "severity": "warn", "reason": "angry"}
        sink.handle(Partial(Speaker.AGENT, 11.5, "I am so"), 2.1)
        assert recv(ws) == {"type": "partial", "t": 11.5, "wall": 2.1, "speaker": "agent", "text": "I am so"}
        sink.handle(security(12.0, opened=False), 2.2)
        assert recv(ws)["type"] == "prompt_close"
    # A reconnect sees the state as it is now, with nothing sent twice.
    with connect(ws_url(server)) as ws:
        snap = recv(ws)
        assert [p["prompt"] for p in snap["prompts"]] == ["apologize"]
        assert [p["text"] for p in snap["partials"]] == ["I am so"]
        sink.handle(CallEnd(13.0), 2.5)
        assert recv(ws) == {"type": "call_end", "t": 13.0, "wall": 2.5}
    assert [r["prompt"] for r in server.prompt_log] == ["call_security", "apologize"]
    assert server.prompt_log[1]["clients"] == 1


def test_snapshot_is_bounded_and_follows_the_call(server):
    sink = OverlaySink(server)
    sink.handle(Partial(Speaker.CUSTOMER, 0.5, "hel"), 0.1)
    for i in range(30):
        sink.handle(utterance(f"line {i}", 1.0 + i), 0.2 + i)
    for i in range(150):
        sink.handle(trajectory(float(i), trusted=i < 149), 0.3 + i)
    state = httpx.get(server.url + "api/state").json()
    assert len(state["transcript"]) == 20 and state["transcript"][-1]["text"] == "line 29"
    assert state["partials"] == []  # the customer's utterance replaced the partial
    assert len(state["series"]) == 120 and state["series"][-1] == {"t": 149.0, "escalation": 2.1, "risk": 0.7,
                                                                   "arousal": 0.5}
    assert state["trajectory"]["words_trusted"] is False and state["call_end"] is None
    server.reset()
    assert httpx.get(server.url + "api/state").json()["transcript"] == []


def test_sink_runs_on_the_bus(server):
    bus = Bus()
    bus.add(OverlaySink(server), maxsize=1024)
    bus.start()
    with connect(ws_url(server)) as ws:
        recv(ws)
        bus.publish(security(3.0))
        msg = recv(ws)
        assert msg["prompt"] == "call_security" and msg["wall"] >= 0
        bus.publish(CallEnd(4.0))
        reports = bus.close()
    assert reports[0].name == "overlay" and reports[0].ok and reports[0].handled == 2
    assert server.state()["call_end"]["t"] == 4.0


def _stalled_client(port: int) -> socket.socket:
    """A WebSocket client that completes the handshake and then never reads."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    assert s.recv(12) == b"HTTP/1.1 101"
    return s


def _number(msg: dict) -> int:
    return int(msg["text"].split(" ", 1)[0])


def test_a_stalled_client_blocks_neither_the_sink_nor_other_clients():
    server = OverlayServer(client_queue=32).start()
    stalled = _stalled_client(server.port)
    try:
        sink = OverlaySink(server)
        deadline = time.monotonic() + 5
        while server.clients < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        with connect(ws_url(server), max_size=None) as ws:
            recv(ws)
            text = "x" * 20_000
            worst = 0.0
            for i in range(600):  # 12 MB for a client that reads nothing
                t0 = time.perf_counter()
                sink.handle(utterance(f"{i} {text}", float(i + 1)), float(i))
                worst = max(worst, time.perf_counter() - t0)
                if i % 50 == 0:  # the reading client keeps up meanwhile (newest messages always arrive)
                    while _number(recv(ws)) < i:
                        pass
            assert worst < 0.1, f"handle() took {worst:.3f} s"
            while _number(recv(ws, timeout=5)) < 599:
                pass
        deadline = time.monotonic() + 5
        while server.dropped == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.dropped > 0  # the stalled client lost its oldest messages, nobody waited
    finally:
        stalled.close()
        t0 = time.monotonic()
        server.stop()
        assert time.monotonic() - t0 < 1.5


def test_stop_is_fast_with_clients_connected_and_frees_the_port():
    s = OverlayServer().start()
    port = s.port
    with connect(ws_url(s)) as ws:
        recv(ws)
        t0 = time.monotonic()
        s.stop()
        assert time.monotonic() - t0 < 1.2
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
    again = OverlayServer(port=port).start()  # the same port can be served again at once
    try:
        assert again.port == port and httpx.get(again.url + "healthz").status_code == 200
    finally:
        again.stop()


def test_port_in_use_is_a_config_error(server):
    with pytest.raises(ConfigError, match="cannot listen"):
        OverlayServer(port=server.port).start()
