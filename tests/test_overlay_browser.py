"""The overlay page in a real browser: prompts, badge, transcript, reload and reconnect.

Runs headless Chromium through Playwright (``/usr/bin/chromium``, or ``$COACH_CHROMIUM``).
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from coach.events import Level, Partial, Prompt, ScoredUtterance, Speaker, TrajectoryState, Trend, Utterance
from coach.overlay import OverlayServer, OverlaySink

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is missing: pip install -e .[test]")
expect = sync_api.expect

CHROMIUM = Path(os.environ.get("COACH_CHROMIUM", "/usr/bin/chromium"))
TOKEN = "browser-token-0123456789"


def prompt(pid: str, t: float, priority: int, severity: str, opened: bool = True) -> Prompt:
    return Prompt(pid, t, opened, f"{pid} text", priority, severity, "test")


def trajectory(t: float, trusted: bool) -> TrajectoryState:
    return TrajectoryState(Speaker.CUSTOMER, t, 2.4, -0.7, Level.ANGRY, Trend.RISING, Level.ANGRY, risk=0.8,
                           arousal=0.6, words_trusted=trusted)


@pytest.fixture(scope="module")
def browser():
    deadline = time.monotonic() + 300  # it may still be being installed
    while not CHROMIUM.exists() and time.monotonic() < deadline:
        time.sleep(5)
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium (or set $COACH_CHROMIUM)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 360, "height": 640})
    pg = ctx.new_page()
    pg.set_default_timeout(10_000)
    pg.seen = []  # every URL the page asked for, WebSockets included
    pg.on("request", lambda r: pg.seen.append(r.url))
    pg.on("websocket", lambda ws: pg.seen.append(ws.url))
    yield pg
    ctx.close()


def only_local(urls: list[str]) -> None:
    assert urls, "the page made no requests at all"
    foreign = [u for u in urls if urlsplit(u).hostname != "127.0.0.1"]
    assert not foreign, f"the page reached beyond 127.0.0.1: {foreign}"


def test_prompts_badge_transcript_reload_and_reconnect(page):
    server = OverlayServer().start()
    port = server.port
    sink = OverlaySink(server)
    try:
        page.goto(server.url)
        expect(page.locator("#conn")).to_have_attribute("data-state", "open")
        box = page.locator("#prompt")
        expect(box).to_have_attribute("data-severity", "none")

        sink.handle(prompt("apologize", 5.0, 70, "warn"), 1.0)
        expect(box).to_have_attribute("data-prompt", "apologize")
        expect(box).to_have_attribute("data-severity", "warn")
        sink.handle(prompt("call_security", 6.0, 100, "critical"), 1.1)
        expect(box).to_have_attribute("data-prompt", "call_security")
        expect(box).to_have_attribute("data-severity", "critical")
        expect(page.locator("#prompt-text")).to_have_text("call_security text")
        sink.handle(prompt("paraphrase", 7.0, 65, "warning"), 1.2)  # lower priority: not on top
        expect(page.locator("#others li")).to_have_count(2)
        expect(box).to_have_attribute("data-prompt", "call_security")

        unreliable = page.locator("#unreliable")
        expect(unreliable).to_be_hidden()
        sink.handle(trajectory(7.5, trusted=False), 1.3)
        expect(unreliable).to_be_visible()
        expect(page.locator("#state")).to_have_attribute("data-level", "angry")

        sink.handle(ScoredUtterance(Utterance(Speaker.CUSTOMER, 6.0, 8.0, "I want my money back"), None), 1.4)
        sink.handle(Partial(Speaker.AGENT, 8.5, "I understand"), 1.5)
        expect(page.locator("#transcript li[data-speaker=customer]")).to_contain_text("I want my money back")
        expect(page.locator("#transcript li.partial")).to_contain_text("I understand")

        page.reload()  # the snapshot restores everything
        expect(page.locator("#conn")).to_have_attribute("data-state", "open")
        expect(box).to_have_attribute("data-prompt", "call_security")
        expect(unreliable).to_be_visible()
        expect(page.locator("#transcript li.partial")).to_contain_text("I understand")

        sink.handle(prompt("call_security", 9.0, 100, "critical", opened=False), 1.6)
        expect(box).to_have_attribute("data-prompt", "apologize")  # 70 beats 65
        sink.handle(trajectory(9.5, trusted=True), 1.7)
        expect(unreliable).to_be_hidden()

        server.stop()
        expect(page.locator("#conn")).to_have_attribute("data-state", "closed")
        server = OverlayServer(port=port).start()
        sink = OverlaySink(server)
        expect(page.locator("#conn")).to_have_attribute("data-state", "open", timeout=15_000)
        expect(box).to_have_attribute("data-severity", "none")  # the new server's (empty) state
        sink.handle(prompt("set_boundary", 1.0, 90, "critical"), 0.1)
        expect(box).to_have_attribute("data-prompt", "set_boundary")
    finally:
        server.stop()
    only_local(page.seen)


def test_page_passes_its_token_to_the_websocket(page):
    server = OverlayServer(token=TOKEN).start()
    try:
        page.goto(server.url + f"?token={TOKEN}")
        expect(page.locator("#conn")).to_have_attribute("data-state", "open")
        OverlaySink(server).handle(prompt("end_or_escalate", 2.0, 95, "critical"), 0.2)
        expect(page.locator("#prompt")).to_have_attribute("data-prompt", "end_or_escalate")
    finally:
        server.stop()
    only_local(page.seen)


def test_page_without_token_is_refused(page):
    server = OverlayServer(token=TOKEN).start()
    try:
        assert page.goto(server.url).status == 403
    finally:
        server.stop()


def test_board_page_highlights_open_critical_alerts(page):
    from coach import codec
    from coach.events import CallEnd
    from coach.supervisor import BoardServer

    board = BoardServer().start()
    try:
        page.goto(board.url)
        expect(page.locator("#conn")).to_have_attribute("data-state", "open")
        expect(page.locator("#empty")).to_be_visible()
        board.ingest({"session": "desk-9", "agent": "Ben", "sent_at": None,
                      "event": codec.encode(prompt("call_security", 5.0, 100, "critical"), 1.0)})
        board.ingest({"session": "desk-2", "agent": None, "sent_at": None, "event": codec.encode(CallEnd(9.0), 2.0)})
        card = page.locator('.session[data-session="desk-9"]')
        expect(card).to_have_attribute("data-critical", "true")
        expect(card.locator('.alert.open[data-prompt="call_security"]')).to_have_text("call_security text")
        expect(page.locator('.session[data-session="desk-2"]')).to_have_attribute("data-status", "ended")
        expect(page.locator("#count")).to_have_text("1 live, 1 ended")
    finally:
        board.stop()
    only_local(page.seen)
