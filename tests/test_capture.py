"""Live capture on real (virtual) devices: a private PulseAudio daemon's null sinks.

Speech is played into ``coach_agent`` / ``coach_customer`` with ``paplay`` and captured
from their monitors through ALSA and PortAudio, exactly as a headset would be. The
harness (``tests/pulse.py``) fails the test with what to install when it cannot start.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import threading
import time
import wave

import numpy as np
import pytest
import soundfile as sf
from pulse import pulse_devices  # noqa: F401  (the fixture)

from coach.audio import write_wav
from coach.capture import DeviceSource, list_devices, resolve_device
from coach.errors import AudioError
from coach.sources import AudioSource, FileSource

SR = 16000
CHUNK = 0.1
WIN = 0.05  # envelope window, seconds


# ----------------------------------------------------------------------------- helpers


@pytest.fixture(scope="session")
def speech(tmp_path_factory) -> dict[str, object]:
    """Two different short espeak-ng sentences as 8 kHz mono WAVs (telephone audio)."""
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: run `sudo scripts/install_system_deps.sh`", pytrace=False)
    d = tmp_path_factory.mktemp("speech")
    out: dict[str, object] = {}
    for name, voice, text in (("agent", "en-us", "Thank you for calling, how can I help?"),
                              ("customer", "en", "I was charged twice for my order.")):
        raw, wav = d / f"{name}-22k.wav", d / f"{name}.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-w", str(raw), text], check=True, timeout=60)
        subprocess.run(["sox", str(raw), "-r", "8000", "-c", "1", str(wav)], check=True, timeout=60)
        out[name] = wav
    return out


def envelope(x: np.ndarray, sr: int) -> np.ndarray:
    """Loudness per 50 ms window in dBFS, floored at -70."""
    n = int(sr * WIN)
    m = len(x) // n
    f = np.asarray(x[:m * n], np.float64).reshape(m, n) / (32768.0 if x.dtype == np.int16 else 1.0)
    return np.maximum(10 * np.log10(np.mean(f * f, axis=1) + 1e-12), -70.0)


def locate(captured: np.ndarray, wav) -> tuple[float, float]:
    """Where the played file's loudness contour best matches the captured channel:
    (call time in seconds, correlation)."""
    ref_x, ref_sr = sf.read(str(wav), dtype="float32")
    ref, cap = envelope(ref_x, ref_sr), envelope(captured, SR)
    best = (0.0, -1.0)
    for lag in range(len(cap) - len(ref) + 1):
        seg = cap[lag:lag + len(ref)]
        if seg.std() > 0:
            r = float(np.corrcoef(seg, ref)[0, 1])
            if r > best[1]:
                best = (lag * WIN, r)
    return best


def level(x: np.ndarray, t0: float, t1: float) -> float:
    """Loudest 50 ms window of ``x`` between call times t0 and t1, dBFS."""
    seg = x[int(t0 * SR):int(t1 * SR)]
    return float(envelope(seg, SR).max()) if len(seg) >= SR * WIN else -70.0


def wait_for(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


class Capture:
    """Runs ``source.chunks()`` in a thread, keeping every group; ``stall`` pauses the reader."""

    def __init__(self, source: DeviceSource) -> None:
        self.source = source
        self.groups: list = []
        self.stall_s = 0.0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        wait_for(lambda: source.stats() and all(s.delivering for s in source.stats().values()), 15,
                 "both devices to deliver audio")

    def _run(self) -> None:
        for g in self.source.chunks(CHUNK):
            self.groups.append(g)
            if self.stall_s:
                time.sleep(self.stall_s)
                self.stall_s = 0.0

    def stop(self) -> float:
        t = time.monotonic()
        self.source.close()
        took = time.monotonic() - t
        self.thread.join(2)
        assert not self.thread.is_alive(), "chunks() did not return after close()"
        return took

    def channel(self, i: int) -> np.ndarray:
        return np.concatenate([g[i].samples for g in self.groups])

    def check_clock(self) -> None:
        """One chunk per speaker per step, same t, consecutive and never going back."""
        n = int(CHUNK * SR)
        for k, (a, c) in enumerate(self.groups):
            assert a.t == c.t == k * n / SR, (k, a.t, c.t)
            assert len(a.samples) == len(c.samples) == n and a.samples.dtype == np.int16
            assert a.sample_rate == c.sample_rate == SR


# ----------------------------------------------------------------------------- devices and errors


def test_import_does_no_work():
    code = "import sys, coach.capture; assert 'sounddevice' not in sys.modules, 'imported at import time'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_devices_lists_the_virtual_devices(pulse_devices, capsys):
    names = [d.name for d in list_devices()]
    assert "coach_agent" in names and "coach_customer" in names, names
    assert all(d.max_input_channels > 0 for d in list_devices())
    from coach.cli import devices
    parser = argparse.ArgumentParser()
    devices.register(parser.add_subparsers())
    args = parser.parse_args(["devices"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "coach_agent" in out and "coach_customer" in out and "host API" in out and "* default input" in out


def test_resolve_device_errors_are_one_line(pulse_devices, monkeypatch):
    agent = resolve_device("COACH_AGENT")  # case-insensitive
    assert resolve_device(agent.index) == agent == resolve_device(str(agent.index))
    assert resolve_device("customer").name == "coach_customer"  # a unique part of the name
    cases = {"no audio device is called 'nope'": "nope", "is ambiguous": "coach_", "there is no audio device 999": 999}
    for msg, spec in cases.items():
        with pytest.raises(AudioError, match=msg) as e:
            resolve_device(spec)
        assert "\n" not in str(e.value)
    with pytest.raises(AudioError, match="coach devices"):
        resolve_device("nope")
    with pytest.raises(AudioError, match="channel 40 is not an input channel"):
        DeviceSource("coach_agent", "coach_customer", customer_channel=40).open()
    with pytest.raises(AudioError, match="both use channel 0"):
        DeviceSource("coach_agent", agent_channel=0, customer_channel=0).open()

    from coach import capture
    speakers = capture.DeviceInfo(7, "HDMI speakers", "ALSA", 0, 48000.0)
    monkeypatch.setattr(capture, "_all_devices", lambda: [agent, speakers])
    with pytest.raises(AudioError, match="has no input channels"):
        resolve_device("hdmi")


def test_portaudio_missing_is_one_line(monkeypatch):
    class NoPortAudio:
        def find_spec(self, name, path=None, target=None):
            if name == "sounddevice":
                raise OSError("PortAudio library not found")

    monkeypatch.delitem(sys.modules, "sounddevice", raising=False)
    monkeypatch.setattr(sys, "meta_path", [NoPortAudio(), *sys.meta_path])
    with pytest.raises(AudioError, match=r"PortAudio library is missing .*apt-get install libportaudio2"):
        list_devices()


def test_the_harness_says_what_to_install(monkeypatch):
    import pulse
    monkeypatch.setattr(pulse.shutil, "which", lambda tool: None)
    with pytest.raises(pulse.PulseError, match="pulseaudio is not installed; run `sudo scripts/install_system_deps.sh`"):
        pulse.PulseAudio().start()


def test_record_refuses_an_existing_file(tmp_path):
    rec = tmp_path / "rec.wav"
    rec.write_bytes(b"keep me")
    with pytest.raises(AudioError, match="already exists. choose a new file, or pass --force"):
        DeviceSource("coach_agent", "coach_customer", record=rec)
    assert rec.read_bytes() == b"keep me"


# ----------------------------------------------------------------------------- capture


def test_two_devices_capture_align_and_record(pulse_devices, speech, tmp_path):
    rec = tmp_path / "rec.wav"
    lines: list[str] = []
    src = DeviceSource("coach_agent", "coach_customer", sample_rate=SR, record=rec, on_status=lines.append)
    assert isinstance(src, AudioSource) and src.live and src.duration is None
    cap = Capture(src)
    t_cust = src.call_time()
    pulse_devices.play("coach_customer", speech["customer"])
    t_agent = src.call_time()
    pulse_devices.play("coach_agent", speech["agent"])
    t_both = src.call_time()
    players = [pulse_devices.play(s, speech["customer"], wait=False) for s in ("coach_agent", "coach_customer")]
    for p in players:
        assert p.wait(30) == 0
    time.sleep(0.3)
    assert cap.stop() < 0.6
    src.close()  # idempotent

    cap.check_clock()
    agent, customer = cap.channel(0), cap.channel(1)
    end = len(cap.groups) * CHUNK
    assert end >= t_both + 2.0
    # each clip lands on its own channel, near when it was played, the other channel silent
    at, r = locate(customer[:int(t_agent * SR)], speech["customer"])
    assert r > 0.8 and t_cust - 0.2 <= at <= t_cust + 1.0, (at, r, t_cust)
    assert level(agent, t_cust, t_agent) < -60
    at, r = locate(agent[:int(t_both * SR)], speech["agent"])
    assert r > 0.8 and t_agent - 0.2 <= at <= t_agent + 1.0, (at, r, t_agent)
    assert level(customer, t_agent + 0.5, t_both) < -60
    # the same clip played into both devices at once: both channels carry it at the same call time
    a_at, ra = locate(agent[int(t_both * SR):], speech["customer"])
    c_at, rc = locate(customer[int(t_both * SR):], speech["customer"])
    assert ra > 0.8 and rc > 0.8 and abs(a_at - c_at) <= 0.15, (a_at, c_at)
    stats = src.stats()
    assert set(stats) == {"agent", "customer"}
    assert all(s.losses == 0 and s.dropped_blocks == 0 for s in stats.values()), stats
    assert lines == []

    # the recording: stereo, agent left, exactly what the pipeline was fed; replay reads it back
    with wave.open(str(rec)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (2, 2, SR)
        assert abs(w.getnframes() - len(agent)) <= int(CHUNK * SR)
    with FileSource(rec, sample_rate=SR) as fs:
        replayed = list(fs.chunks(CHUNK))
    assert len(replayed) == len(cap.groups)
    for (a, c), (ra_, rc_) in zip(cap.groups, replayed):
        assert np.array_equal(a.samples, ra_.samples) and np.array_equal(c.samples, rc_.samples)


def test_one_stereo_device_with_a_channel_map(pulse_devices, speech, tmp_path, monkeypatch):
    # record at the device's own 44.1 kHz, as from a sound card that cannot do 16 kHz: resampled
    monkeypatch.setattr(DeviceSource, "_rate_for", lambda self, info, channels, label: int(info.default_samplerate))
    a, _ = sf.read(str(speech["agent"]), dtype="float32")
    c, _ = sf.read(str(speech["customer"]), dtype="float32")
    gap = np.zeros(4000, np.float32)  # 0.5 s at 8 kHz
    # the customer on the left (speaking second), the agent on the right: the map must be honoured
    stereo = write_wav(tmp_path / "call.wav", [np.concatenate([np.zeros_like(a), gap, c]),
                                               np.concatenate([a, gap, np.zeros_like(c)])], 8000)
    src = DeviceSource("coach_agent", agent_channel=1, customer_channel=0, sample_rate=SR)
    cap = Capture(src)
    t0 = src.call_time()
    pulse_devices.play("coach_agent", stereo)
    time.sleep(0.3)
    cap.stop()
    assert list(src.chunks(CHUNK)) == []  # a closed source stays closed
    cap.check_clock()
    assert set(src.stats()) == {"call"} and src.stats()["call"].rate == 44100
    agent, customer = cap.channel(0), cap.channel(1)
    c_at, r = locate(customer, speech["customer"])
    assert r > 0.8, r
    # the right channel (agent) is silent where the left one speaks, and the reverse
    assert level(agent, c_at + 0.2, c_at + len(c) / 8000 - 0.2) < -60
    assert level(customer, t0, c_at - 0.2) < -60
    assert locate(agent, speech["agent"])[1] > 0.8


def test_a_slow_consumer_drops_blocks_and_never_blocks_the_callback(pulse_devices, speech):
    src = DeviceSource("coach_agent", "coach_customer", sample_rate=SR, block_s=0.05, queue_s=0.2)
    cap = Capture(src)
    stall_at = len(cap.groups)
    cap.stall_s = 2.0  # the consumer stops reading for 2 s
    wait_for(lambda: cap.stall_s == 0.0, 10, "the stall to end")
    t_play = src.call_time()
    pulse_devices.play("coach_customer", speech["customer"])
    time.sleep(0.3)
    cap.stop()

    cap.check_clock()  # the call clock ran on through the stall
    for s in src.stats().values():
        assert s.queue_max == 4 and s.queue_peak <= s.queue_max, s  # memory bounded
        assert s.dropped_blocks >= 20 and 1.0 <= s.dropped_seconds <= 2.5, s  # counted
        assert s.max_callback_s < 0.05, s  # never waited for the consumer
        assert s.overflows == 0 and s.losses == 0, s
    assert len(cap.groups) > stall_at + 30  # capture went on after the stall
    _, r = locate(cap.channel(1)[int(t_play * SR):], speech["customer"])
    assert r > 0.8, r


def test_a_lost_device_is_filled_with_silence_and_reopened(pulse_devices, speech):
    lines: list[str] = []
    src = DeviceSource("coach_agent", "coach_customer", sample_rate=SR, on_status=lines.append)
    cap = Capture(src)
    agent_filled = src.stats()["agent"].filled_seconds  # the start-up, before the devices delivered
    try:
        pulse_devices.unload("coach_customer")
        t_lost = src.call_time()
        wait_for(lambda: any("lost" in ln for ln in lines), 5, "a 'lost' status line")
        n, t0 = len(cap.groups), time.monotonic()
        time.sleep(2.0)
        # Chunks keep coming while the device is gone: at least half the wall-clock rate
        # (one chunk per CHUNK s), a margin for a loaded CI machine (7 of 10 seen in 1 s).
        assert len(cap.groups) - n >= 0.5 * (time.monotonic() - t0) / CHUNK
    finally:
        pulse_devices.reload("coach_customer")
    wait_for(lambda: any("reopened" in ln for ln in lines), 20, "a 'reopened' status line")
    t_play = src.call_time()
    pulse_devices.play("coach_customer", speech["customer"])
    time.sleep(0.3)
    now = src.call_time()
    cap.stop()

    lost = [ln for ln in lines if ln.startswith("customer device 'coach_customer' lost: ")]
    assert lost and lost[0].endswith("; reopening"), lines
    assert any(ln.startswith("customer device 'coach_customer' reopened after ") for ln in lines), lines
    assert not any("agent device" in ln for ln in lines), lines
    cap.check_clock()
    customer = cap.channel(1)
    assert level(customer, t_lost + 1.0, t_lost + 2.0) < -60  # silence fill while gone
    _, r = locate(customer[int(t_play * SR):], speech["customer"])
    assert r > 0.8, r  # real audio again after the reopen
    assert len(cap.groups) * CHUNK >= now - 0.6  # the call clock followed the wall clock throughout
    st = src.stats()
    # One loss and its reopen; a loaded machine may add a retry that also stalls.
    assert st["customer"].losses >= 1 and st["customer"].reopens >= 1, st
    assert st["customer"].losses - st["customer"].reopens <= 0, st
    assert st["customer"].filled_seconds >= 0.5, st
    assert st["agent"].losses == 0 and st["agent"].filled_seconds - agent_filled < 0.5, st  # the agent unharmed
