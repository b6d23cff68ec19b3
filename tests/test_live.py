"""`coach live` end to end on real (virtual) devices: PulseAudio null sinks, sounddevice
capture through ALSA's pulse plugin, the overlay page in headless Chromium.

The sample call's two channels are played with ``paplay`` into two sinks (agent and
customer); ``coach live`` runs as a separate process, as an agent would run it, and
captures the sinks' monitors. Nothing is mocked: the recognizer, classifier, playbook,
overlay server, WebSocket and page are the shipped ones.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import example
from procs import Watched
from pulse import PulseAudio, PulseError

CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pulse():
    pa = PulseAudio()
    try:
        pa.start()
    except PulseError as e:
        pytest.fail(f"the PulseAudio test harness could not start: {e}", pytrace=False)
    yield pa
    pa.stop()


def _split(call: Path, tmp: Path) -> tuple[Path, Path]:
    """The stereo sample call as two mono files: agent (left) and customer (right)."""
    x, rate = sf.read(str(call), dtype="int16")
    a, c = tmp / "agent.wav", tmp / "customer.wav"
    sf.write(str(a), x[:, 0], rate, subtype="PCM_16")
    sf.write(str(c), x[:, 1], rate, subtype="PCM_16")
    return a, c


class _Live(Watched):
    """`coach live` as a subprocess; stderr is read on a thread (status lines)."""

    def __init__(self, pulse: PulseAudio, *args: str) -> None:
        super().__init__([sys.executable, "-m", "coach.cli", "live", "--agent-device", "coach_agent",
                          "--customer-device", "coach_customer", "--quiet", *args], env=pulse.environ())

    def interrupt(self, sig: int = signal.SIGINT) -> float:
        """Send ``sig`` and wait for the process to exit on its own.

        Fails if it is still running 10 s later: a liveness guard against a shutdown that
        hangs, far above the bounded design (recognizer drain 0.7 s, bus drain 1.5 s,
        device shutdown 0.5 s), so a loaded CI machine does not make it flaky. How fast
        it exits is a speed figure, not a test assert. Returns the seconds it took.
        """
        t0 = time.monotonic()
        self.proc.send_signal(sig)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("coach live did not exit within 10 s of " + signal.Signals(sig).name)
        self._t.join(2)
        return time.monotonic() - t0


def _events(path: Path) -> list[dict]:
    from coach.codec import read_events
    read_events(path)  # strict: every line whole and valid
    return [json.loads(ln) for ln in path.read_text().splitlines()[1:]]


class _Webhook(BaseHTTPRequestHandler):
    got: list[dict] = []

    def do_POST(self):  # noqa: N802
        n = int(self.headers.get("Content-Length", 0))
        type(self).got.append(json.loads(self.rfile.read(n)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *a):
        pass


def test_live_call_shows_the_prompt_on_the_overlay_and_ends_cleanly(pulse, tmp_path):
    """The escalating sample call, played into the two virtual devices, opens
    `apologize` on the overlay page; Ctrl-C ends it by itself with a complete events
    file (how fast: benchmarks/bench_shutdown.py)."""
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "chromium is missing: run scripts/install_system_deps.sh as root"
    agent_wav, customer_wav = _split(example("escalating.wav"), tmp_path)
    events, record = tmp_path / "live.jsonl", tmp_path / "live.wav"
    live = _Live(pulse, "--port", "0", "--events", str(events), "--record", str(record))
    try:
        url = live.wait_for(r"overlay: (http://\S+)", 60).group(1)
        assert url.startswith("http://127.0.0.1:"), url
        live.wait_for(r"listening: ", 120)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 380, "height": 700})
            outside = []
            page.on("request", lambda r: outside.append(r.url) if "127.0.0.1" not in r.url else None)
            page.goto(url)
            page.wait_for_selector("#conn[data-state=open]", state="attached", timeout=10_000)
            time.sleep(0.5)
            players = [pulse.play("coach_agent", agent_wav, wait=False),
                       pulse.play("coach_customer", customer_wav, wait=False)]
            page.wait_for_selector("#prompt[data-prompt=apologize]", state="attached", timeout=60_000)
            seen_at = time.monotonic()
            for pl in players:
                pl.wait(60)
            time.sleep(2.0)
            browser.close()
        live.interrupt(signal.SIGINT)   # exits by itself, or fails after 10 s
    finally:
        live.kill()
    assert live.proc.returncode == 130, live.lines
    assert not outside, f"the page loaded outside resources: {outside}"
    evs = _events(events)
    assert evs[-1]["type"] == "call_end"
    opened = {e["prompt"] for e in evs if e["type"] == "prompt_open"}
    assert "apologize" in opened
    assert not opened & {"call_security", "set_boundary"}, opened
    said = [e for e in evs if e["type"] == "utterance" and e["speaker"] == "customer"]
    assert len(said) >= 5 and any(e.get("voice", {}).get("arousal") is not None for e in said)
    # The recording holds what was captured: two channels, the length of the session.
    info = sf.info(str(record))
    assert info.channels == 2 and info.duration >= 38.0
    rec, rate = sf.read(str(record), dtype="int16")
    assert np.abs(rec[:, 1]).max() > 1000 and np.abs(rec[:, 0]).max() > 1000
    assert seen_at  # the prompt was seen on the page during the call


def test_live_survives_a_device_that_vanishes_mid_call(pulse, tmp_path):
    """The customer device disappears mid-call and comes back: coach live says so,
    keeps the call clock running and its events file, and still hears the customer."""
    _, customer_wav = _split(example("escalating.wav"), tmp_path)
    events = tmp_path / "loss.jsonl"
    live = _Live(pulse, "--events", str(events))
    unloaded = False
    try:
        live.wait_for(r"listening: ", 120)
        pulse.wait_recording("coach_customer")  # "listening" comes before the streams open
        # A RUNNING monitor may still take ~2 s to hand ALSA its first period (seen under
        # CI load): unloaded before that, coach rightly says "did not start", not "lost".
        time.sleep(3.0)
        pulse.unload("coach_customer")
        unloaded = True
        live.wait_for(r"customer.*lost", 15)
        time.sleep(1.5)
        pulse.reload("coach_customer")
        unloaded = False
        live.wait_for(r"customer.*reopened", 20)
        pulse.play("coach_customer", customer_wav, wait=True)
        time.sleep(2.0)
        live.interrupt(signal.SIGTERM)   # exits by itself, or fails after 10 s
    finally:
        live.kill()
        if unloaded:  # the daemon is shared by the module's tests: give the device back
            pulse.reload("coach_customer")
    assert live.proc.returncode == 143, live.lines
    evs = _events(events)
    assert evs[-1]["type"] == "call_end" and evs[-1]["t"] > 40.0
    assert sum(e["type"] == "utterance" and e["speaker"] == "customer" for e in evs) >= 5


def test_critical_prompt_reaches_the_supervisor_webhook_live(pulse, tmp_path):
    """The abusive sample call live: `call_security` goes to a test webhook as it opens."""
    _Webhook.got = []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Webhook)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    agent_wav, customer_wav = _split(example("abusive.wav"), tmp_path)
    events = tmp_path / "abusive.jsonl"
    live = _Live(pulse, "--events", str(events), "--supervisor",
                 f"http://127.0.0.1:{srv.server_address[1]}/api/report", "--name", "desk-7")
    try:
        live.wait_for(r"listening: ", 120)
        for sink in ("coach_agent", "coach_customer"):
            pulse.wait_recording(sink)
        time.sleep(0.5)
        players = [pulse.play("coach_agent", agent_wav, wait=False),
                   pulse.play("coach_customer", customer_wav, wait=False)]
        for pl in players:
            pl.wait(60)
        time.sleep(2.5)
        live.interrupt(signal.SIGINT)
    finally:
        live.kill()
        srv.shutdown()
    evs = _events(events)
    opened = {e["prompt"] for e in evs if e["type"] == "prompt_open"}
    assert "call_security" in opened, opened
    alerts = [g for g in _Webhook.got if g["event"]["type"] == "prompt_open"]
    assert any(g["event"]["prompt"] == "call_security" and g["session"] == "desk-7" for g in alerts), _Webhook.got
    assert all(g["event"]["prompt"] in ("call_security", "set_boundary", "end_or_escalate") for g in alerts)
