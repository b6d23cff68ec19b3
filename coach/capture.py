"""Live capture from sound devices: the :class:`~coach.sources.AudioSource` of a real call.

Shape (vosk ``test_microphone.py``): the PortAudio callback only copies the block and
puts it, without blocking, on a bounded queue; a full queue drops the block and counts
it, so a slow consumer can never stall the audio thread or grow memory. Everything else
happens in the thread iterating :meth:`DeviceSource.chunks`: resampling to the
recognizer's rate, placing each device's samples on the call clock, cutting chunks and
writing the optional recording.

The call clock is the wall clock since capture started. Each device's samples are
placed by their sample count from the start of its stream, and a stream (re)start or a
gap (dropped blocks) is placed by its arrival time, so two devices with their own
clocks stay aligned and a device that delivers nothing is filled with silence instead
of stopping the call. A stream that stops, stalls or vanishes is reported and reopened
with bounded exponential backoff until :meth:`DeviceSource.close`. Through ALSA's
``pulse`` plugin (PulseAudio, PipeWire) the sound server moves a vanished device's stream
to its fallback source by default, which PortAudio cannot see: name the ALSA hardware
device, or set ``rescue-streams = no`` in PulseAudio's daemon.conf, to have losses reported.

``sounddevice`` (and so PortAudio) is imported lazily: importing this module does nothing.
"""
from __future__ import annotations

import collections
import contextlib
import os
import queue
import re
import tempfile
import threading
import time
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Literal

import numpy as np

from .audio import StreamResampler, to_int16
from .errors import AudioError
from .events import AudioChunk, Speaker

BACKOFF_MIN_S, BACKOFF_MAX_S = 0.25, 4.0  # reopen delays: doubling from 0.25 s up to 4 s
STALL_S = 1.0  # a running stream silent this long is lost (blocks normally come every 20-100 ms)
START_S = 5.0  # a new stream may take this long to deliver (PulseAudio sometimes needs ~2 s)
LATE_S = 0.3  # how long a chunk waits for a late device before that device's share is silence
AHEAD_S = 0.5  # a device running this far ahead of the wall clock (fast clock) is trimmed back
POLL_S = 0.05  # how often the stream supervisors look at their streams
_FIX = "run `coach devices` to list the input devices"

_PA_LOCK = threading.Lock()  # PortAudio's open/start/abort/close are not meant to race each other
_NATIVE_NOISE = re.compile(r"^(ALSA lib |Expression '|PaAlsa|PaUnix)")


def _sd():
    """The sounddevice module, or a one-line error when the PortAudio library is missing."""
    try:
        import sounddevice
    except OSError as e:
        raise AudioError(f"the PortAudio library is missing ({e})",
                         "install it: apt-get install libportaudio2") from None
    except Exception as e:  # noqa: BLE001 - PortAudio failing to initialise raises PortAudioError
        raise AudioError(f"PortAudio could not start ({_one_line(e)})",
                         "check the sound system (e.g. `pactl info`), then retry") from None
    return sounddevice


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


@contextlib.contextmanager
def _native_quiet():
    """Keep ALSA's and PortAudio's C-level chatter (a few lines per failed open, every
    retry) off the terminal; anything else written to stderr meanwhile is passed on."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            keep = [ln for ln in tmp.read().decode("utf-8", "replace").splitlines()
                    if ln.strip() and not _NATIVE_NOISE.match(ln)]
            if keep:
                os.write(2, ("\n".join(keep) + "\n").encode())


# ----------------------------------------------------------------------------- devices


@dataclass(frozen=True)
class DeviceInfo:
    """One input device as PortAudio sees it."""

    index: int
    name: str
    host_api: str
    max_input_channels: int
    default_samplerate: float
    is_default: bool = False


def _all_devices() -> list[DeviceInfo]:
    sd = _sd()
    apis = sd.query_hostapis()
    try:
        default_in = int(sd.default.device[0])
    except (TypeError, ValueError, IndexError):
        default_in = -1
    return [DeviceInfo(int(d["index"]), str(d["name"]), str(apis[d["hostapi"]]["name"]),
                       int(d["max_input_channels"]), float(d["default_samplerate"]), int(d["index"]) == default_in)
            for d in sd.query_devices()]


def list_devices() -> list[DeviceInfo]:
    """Every device that can record (at least one input channel), in PortAudio's order."""
    return [d for d in _all_devices() if d.max_input_channels > 0]


def resolve_device(spec: int | str | None) -> DeviceInfo:
    """An input device by index, by name (case-insensitive; a unique substring will do)
    or, for ``None``, the system's default input. Raises a one-line :class:`AudioError`."""
    devices = _all_devices()
    inputs = [d for d in devices if d.max_input_channels > 0]
    if not inputs:
        raise AudioError("no audio input devices found", "connect a headset or start PulseAudio, then " + _FIX)
    if spec is None:
        found = [d for d in inputs if d.is_default]
        if not found:
            raise AudioError("there is no default input device", "name one (" + _FIX + ")")
        return found[0]
    text = str(spec).strip()
    if isinstance(spec, int) or text.isdigit():
        found = [d for d in devices if d.index == int(text)]
        if not found:
            raise AudioError(f"there is no audio device {text}", _FIX)
    else:
        low = text.lower()
        found = [d for d in devices if d.name.lower() == low] or [d for d in devices if low in d.name.lower()]
        if not found:
            raise AudioError(f"no audio device is called {text!r}", _FIX)
        usable = [d for d in found if d.max_input_channels > 0]
        if len(usable) > 1:
            names = ", ".join(f"{d.index}: {d.name!r}" for d in usable[:6])
            raise AudioError(f"device name {text!r} is ambiguous ({names})", "give more of the name, or the index")
        found = usable or found
    d = found[0]
    if d.max_input_channels < 1:
        raise AudioError(f"audio device {d.index} {d.name!r} has no input channels", "pick a microphone; " + _FIX)
    return d


@dataclass(frozen=True)
class DeviceStats:
    """What happened to one capture device (counters since capture started)."""

    device: str  # e.g. "customer device 'USB headset'"
    rate: int  # the capture rate, before resampling to the recognizer's
    delivering: bool  # the stream is delivering audio right now
    blocks: int
    dropped_blocks: int  # queue full: the consumer was too slow
    dropped_seconds: float
    overflows: int  # PortAudio's input overflow flag (the audio thread itself was late)
    losses: int  # the stream stopped, stalled or vanished
    reopens: int  # ... and came back
    filled_seconds: float  # silence put in because the device had no audio for the call clock
    trimmed_seconds: float  # audio dropped because the device ran ahead of the wall clock
    queue_max: int
    queue_peak: int  # the most blocks ever waiting (never above queue_max)
    max_callback_s: float  # the longest the audio callback took


# ----------------------------------------------------------------------------- one stream


class _Input:
    """One PortAudio input stream and the thread that keeps it open.

    The callback is the only code on PortAudio's audio thread. The supervisor thread
    opens the stream, watches it (finished or silent for too long means lost), closes
    it and reopens it with backoff, reporting each loss and each recovery.
    """

    def __init__(self, role: str, info: DeviceInfo, cols: tuple[int, ...], speakers: tuple[Speaker, ...],
                 rate: int, block_s: float, queue_s: float, report: Callable[[str], None]) -> None:
        self.label = f"{role} device {info.name!r}"
        self.info, self.cols, self.speakers, self.rate = info, cols, speakers, rate
        self.channels = max(cols) + 1
        self.blocksize = max(1, round(block_s * rate))
        self.queue: queue.Queue = queue.Queue(maxsize=max(2, round(queue_s / block_s)))
        self._report = report
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        self._stream = None
        self._finished = False
        self.session = 0  # bumped on every (re)open: the consumer re-places a new session
        self.frames = 0  # frames the current session delivered, dropped ones included
        self.last_cb = 0.0
        self.blocks = self.dropped_blocks = self.dropped_frames = self.overflows = 0
        self.losses = self.reopens = 0
        self.max_cb_s = 0.0
        self.delivering = False
        # consumer side (the chunks() thread only)
        self.c_session = -1
        self.c_next = 0
        self.queue_peak = 0
        self.resampler: StreamResampler | None = None

    # -- the audio thread

    def _callback(self, indata, frames, time_info, status) -> None:
        t = time.monotonic()
        self.last_cb = t
        if status and status.input_overflow:
            self.overflows += 1
        try:
            self.queue.put_nowait((self.session, self.frames, t, indata[:, self.cols]))  # fancy index: a copy
        except queue.Full:
            self.dropped_blocks += 1
            self.dropped_frames += frames
        self.frames += frames
        self.blocks += 1
        self.max_cb_s = max(self.max_cb_s, time.monotonic() - t)

    def _on_finished(self) -> None:
        self._finished = True

    # -- the supervisor thread

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name=f"coach-capture-{self.label}", daemon=True)
        self.thread.start()

    def _open(self) -> None:
        sd = _sd()
        self._finished = False
        self.frames = 0
        self.session += 1
        with _PA_LOCK, _native_quiet():
            stream = sd.InputStream(device=self.info.index, channels=self.channels, samplerate=self.rate,
                                    blocksize=self.blocksize, dtype="float32", callback=self._callback,
                                    finished_callback=self._on_finished)
            self._stream = stream
            stream.start()

    def _close(self) -> None:
        stream, self._stream = self._stream, None
        self.delivering = False
        if stream is None:
            return
        with _PA_LOCK, _native_quiet():
            for step in (stream.abort, stream.close):
                try:
                    step()
                except Exception:  # a vanished device may fail to close; it is gone either way
                    pass

    def _watch(self, down_since: float | None) -> tuple[str | None, bool]:
        """Wait while the stream is healthy; return why it is not (None: closing) and
        whether it delivered audio. Reports the recovery once audio flows again."""
        start = time.monotonic()
        delivered = False
        while not self.stop.wait(POLL_S):
            now = time.monotonic()
            if self.frames and not delivered:  # before `finished`: audio that came, then stopped, was a loss
                delivered = self.delivering = True
                if down_since is not None:
                    self.reopens += 1
                    self._report(f"{self.label} reopened after {now - down_since:.1f} s")
            if self._finished:
                return "the stream stopped", delivered
            last, limit = (self.last_cb, STALL_S) if delivered else (start, START_S)
            if now - last > limit:
                return f"no audio for {now - last:.1f} s", delivered
        return None, delivered

    def _run(self) -> None:
        delay, down_since = BACKOFF_MIN_S, None
        while not self.stop.is_set():
            try:
                self._open()
            except Exception as e:
                reason, delivered = _one_line(e), False
            else:
                reason, delivered = self._watch(down_since)
            self._close()
            if self.stop.is_set():
                return
            if delivered:
                down_since = None
            if down_since is None:  # it just went down
                down_since, delay = time.monotonic(), BACKOFF_MIN_S
                if delivered:
                    self.losses += 1
                    self._report(f"{self.label} lost: {reason}; reopening")
                else:
                    self._report(f"{self.label} did not start: {reason}; retrying")
            self.stop.wait(delay)
            delay = min(delay * 2, BACKOFF_MAX_S)

    def shutdown(self, timeout: float) -> None:
        self.stop.set()
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(timeout)
        if self.thread is None or not self.thread.is_alive():
            self._close()


class _Lane:
    """One speaker's samples on the call clock, waiting to be cut into chunks.

    Silence put in for gaps is kept as a count, not as samples, so a long gap costs nothing.
    """

    def __init__(self) -> None:
        self.parts: collections.deque[np.ndarray | int] = collections.deque()
        self.size = 0
        self.filled = 0
        self.trimmed = 0

    def put(self, x: np.ndarray) -> None:
        if len(x):
            self.parts.append(x)
            self.size += len(x)

    def pad(self, n: int) -> None:
        if n > 0:
            if self.parts and isinstance(self.parts[-1], int):
                self.parts[-1] += n
            else:
                self.parts.append(n)
            self.size += n

    def take(self, n: int, out: np.ndarray | None = None) -> int:
        """Move up to ``n`` samples into ``out`` (None: discard them); returns how many."""
        i = 0
        while i < n and self.parts:
            p = self.parts[0]
            size = p if isinstance(p, int) else len(p)
            m = min(n - i, size)
            if out is not None and not isinstance(p, int):
                out[i:i + m] = p[:m]
            if m == size:
                self.parts.popleft()
            else:
                self.parts[0] = p - m if isinstance(p, int) else p[m:]
            i += m
        self.size -= i
        return i


# ----------------------------------------------------------------------------- the source


class DeviceSource:
    """A live call from one or two input devices (an :class:`~coach.sources.AudioSource`).

    * two devices: ``agent`` and ``customer`` name different devices; each is recorded
      mono, or only its channel ``agent_channel`` / ``customer_channel`` (0-based);
    * one device: ``customer`` is None or the same device; ``agent_channel`` (default 0)
      and ``customer_channel`` (default 1) pick the two speakers' channels.

    ``agent=None`` is the system's default input. :meth:`open` resolves and checks the
    devices (one-line :class:`AudioError`); :meth:`chunks` starts the capture, whose call
    clock starts at 0 then; :meth:`close` (from any thread) ends it for good.
    ``on_status`` receives one line per device loss and recovery, from a capture thread.
    ``record`` writes exactly the audio fed to the pipeline as a stereo 16-bit WAV
    (agent left, customer right, at ``sample_rate``); an existing file is refused
    unless ``force``.
    """

    kind: Literal["audio"] = "audio"
    live = True
    duration = None

    def __init__(self, agent: int | str | None = None, customer: int | str | None = None, *,
                 agent_channel: int | None = None, customer_channel: int | None = None,
                 sample_rate: int = 16000, block_s: float = 0.05, queue_s: float = 2.0,
                 record: str | os.PathLike | None = None, force: bool = False,
                 on_status: Callable[[str], None] | None = None) -> None:
        if not block_s > 0 or not queue_s > 0:
            raise AudioError(f"capture block {block_s} s and queue {queue_s} s must be positive", "use e.g. 0.05 and 2.0")
        self.agent, self.customer = agent, customer
        self.agent_channel, self.customer_channel = agent_channel, customer_channel
        self.sample_rate = int(sample_rate)
        self.block_s, self.queue_s = float(block_s), float(queue_s)
        self.record = Path(record) if record is not None else None
        self.force = force
        self.on_status = on_status
        self.speakers: tuple[Speaker, ...] = (Speaker.AGENT, Speaker.CUSTOMER)
        self.description = "live capture"
        self.warnings: tuple[str, ...] = ()
        self.inputs: tuple[_Input, ...] = ()
        self._lanes = {s: _Lane() for s in self.speakers}
        self._stop = threading.Event()
        self._lock = threading.Lock()  # open/close and the recording
        self._wav: wave.Wave_write | None = None
        self._wav_file = None
        self._started = False
        self._t0 = 0.0
        self._pos = 0  # samples per speaker handed out so far: the call clock
        if self.record is not None and self.record.exists() and not force:
            raise AudioError(f"recording file {self.record} already exists", "choose a new file, or pass --force to replace it")

    # -- open: resolve and check, create the recording

    def _rate_for(self, info: DeviceInfo, channels: int, label: str) -> int:
        sd = _sd()
        for rate in dict.fromkeys((self.sample_rate, int(info.default_samplerate))):
            try:
                sd.check_input_settings(device=info.index, channels=channels, samplerate=rate, dtype="float32")
                return rate
            except Exception as e:
                err = _one_line(e)
        raise AudioError(f"{label} cannot record {channels} channel(s) at {self.sample_rate} Hz "
                         f"or {int(info.default_samplerate)} Hz ({err})", "pick another device; " + _FIX)

    def _check_channel(self, info: DeviceInfo, ch: int, who: str) -> None:
        if not 0 <= ch < info.max_input_channels:
            raise AudioError(f"{who} channel {ch} is not an input channel of {info.name!r} "
                             f"(it has {info.max_input_channels}, numbered from 0)", "pick another channel or device")

    def _plan(self) -> tuple[_Input, ...]:
        agent = resolve_device(self.agent)
        customer = resolve_device(self.customer) if self.customer is not None else agent
        args = dict(block_s=self.block_s, queue_s=self.queue_s, report=self._report)
        if customer.index == agent.index:
            a = 0 if self.agent_channel is None else self.agent_channel
            c = 1 if self.customer_channel is None else self.customer_channel
            self._check_channel(agent, a, "agent")
            self._check_channel(agent, c, "customer")
            if a == c:
                raise AudioError(f"agent and customer both use channel {a} of {agent.name!r}",
                                 "give them different channels, or two devices")
            rate = self._rate_for(agent, max(a, c) + 1, f"device {agent.name!r}")
            self.description = f"live: {agent.name!r} (agent channel {a}, customer channel {c}, {rate} Hz)"
            return (_Input("call", agent, (a, c), self.speakers, rate, **args),)
        ins, parts = [], []
        for who, info, ch, spk in (("agent", agent, self.agent_channel, Speaker.AGENT),
                                   ("customer", customer, self.customer_channel, Speaker.CUSTOMER)):
            col = 0 if ch is None else ch
            self._check_channel(info, col, who)
            rate = self._rate_for(info, col + 1, f"{who} device {info.name!r}")
            ins.append(_Input(who, info, (col,), (spk,), rate, **args))
            parts.append(f"{who} {info.name!r} ({'mono' if ch is None else f'channel {ch}'}, {rate} Hz)")
        self.description = "live: " + " + ".join(parts)
        return tuple(ins)

    def open(self) -> None:
        """Resolve and check the devices and create the recording; idempotent. Raises
        :class:`AudioError` (one line) for an unknown, ambiguous or unusable device."""
        with self._lock:
            if self.inputs or self._stop.is_set():
                return
            inputs = self._plan()
            if self.record is not None:
                self._open_record()
            self.inputs = inputs

    def _open_record(self) -> None:
        assert self.record is not None
        try:
            f = open(self.record, "wb" if self.force else "xb")
        except FileExistsError:
            raise AudioError(f"recording file {self.record} already exists",
                             "choose a new file, or pass --force to replace it") from None
        except OSError as e:
            raise AudioError(f"cannot write the recording {self.record} ({e.strerror})", "choose a writable path") from None
        w = wave.open(f, "wb")
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(self.sample_rate)
        self._wav, self._wav_file = w, f

    # -- streaming

    def _report(self, msg: str) -> None:
        if self.on_status is not None:
            try:
                self.on_status(msg)
            except Exception:  # a broken status line must never stop the capture
                pass

    def _pump(self, inp: _Input) -> None:
        """Move the device's queued blocks onto its lanes, resampled. A new stream or a
        gap (dropped blocks) is placed by its arrival time on the call clock."""
        inp.queue_peak = max(inp.queue_peak, inp.queue.qsize())
        lanes = [self._lanes[s] for s in inp.speakers]
        while True:
            try:
                session, frame0, arrived, block = inp.queue.get_nowait()
            except queue.Empty:
                return
            if inp.resampler is None:
                inp.resampler = StreamResampler(inp.rate, self.sample_rate)
            if session != inp.c_session or frame0 != inp.c_next:
                tail = inp.resampler.flush()  # the filter's last outputs of the previous stretch
                if tail.ndim == 2 and len(tail):
                    for j, lane in enumerate(lanes):
                        lane.put(to_int16(tail[:, j]))
                inp.resampler.reset()
                inp.c_session = session
                start = max(0.0, arrived - self._t0 - len(block) / inp.rate)
                target = round(start * self.sample_rate)
                for lane in lanes:
                    lane.pad(target - (self._pos + lane.size))
            inp.c_next = frame0 + len(block)
            y = to_int16(inp.resampler.process(block))
            for j, lane in enumerate(lanes):
                lane.put(y[:, j])

    def _trim(self, now: float) -> None:
        """A device whose clock runs fast piles up ahead of the wall clock: drop the excess."""
        wall = (now - self._t0) * self.sample_rate
        for lane in self._lanes.values():
            ahead = int(self._pos + lane.size - wall)
            if ahead > AHEAD_S * self.sample_rate:
                lane.trimmed += lane.take(min(ahead, lane.size))

    def chunks(self, chunk_s: float = 0.1) -> Iterator[tuple[AudioChunk, ...]]:
        """Chunks of ``chunk_s`` for both speakers at the same call time, until :meth:`close`.

        Starts the capture (call time 0 is now). A chunk is cut once the wall clock has
        passed its end and every device has delivered its share, or :data:`LATE_S` later
        with silence for a device that has not. Returns promptly after :meth:`close`.
        """
        if not chunk_s > 0:
            raise AudioError(f"chunk length {chunk_s} s is not positive", "use e.g. 0.1 s")
        self.open()
        with self._lock:
            if self._started or self._stop.is_set():
                return
            self._started = True
            self._pos = 0
            self._t0 = time.monotonic()
            for inp in self.inputs:
                inp.start()
        n = max(1, round(chunk_s * self.sample_rate))
        lanes = [self._lanes[s] for s in self.speakers]
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                for inp in self.inputs:
                    self._pump(inp)
                self._trim(now)
                due = self._t0 + (self._pos + n) / self.sample_rate
                if now < due or (now < due + LATE_S and any(lane.size < n for lane in lanes)):
                    self._stop.wait(min(max(due - now, 0.0), 0.02) if now < due else 0.01)
                    continue
                group = []
                for spk, lane in zip(self.speakers, lanes):
                    x = np.zeros(n, np.int16)
                    lane.filled += n - lane.take(n, x)
                    group.append(AudioChunk(spk, self._pos / self.sample_rate, x, self.sample_rate))
                self._write(group)
                self._pos += n
                yield tuple(group)
        finally:
            self.close()

    def _write(self, group: list[AudioChunk]) -> None:
        with self._lock:
            if self._wav is None:
                return
            frames = np.stack([c.samples for c in group], axis=1).astype("<i2")
            try:
                self._wav.writeframes(frames.tobytes())  # also patches the header's length
                self._wav_file.flush()
            except OSError as e:
                self._close_record()
                self._report(f"recording to {self.record} stopped: {e.strerror or e}")

    def _close_record(self) -> None:
        w, f = self._wav, self._wav_file
        self._wav = self._wav_file = None
        for step in ((w.close,) if w is not None else ()) + ((f.close,) if f is not None else ()):
            try:
                step()
            except OSError:
                pass

    def close(self) -> None:
        """Stop the devices and finish the recording; idempotent, safe from any thread,
        done within about half a second. A closed source stays closed."""
        self._stop.set()
        for inp in self.inputs:
            inp.stop.set()
        deadline = time.monotonic() + 0.5
        for inp in self.inputs:
            inp.shutdown(timeout=max(0.0, deadline - time.monotonic()))
        with self._lock:
            self._close_record()

    def call_time(self) -> float:
        """Seconds since the capture started (0 before): where the call clock is heading."""
        return time.monotonic() - self._t0 if self._started else 0.0

    def stats(self) -> dict[str, DeviceStats]:
        """Counters per device, keyed by role: ``agent`` and ``customer``, or ``call``
        for one device carrying both speakers."""
        out = {}
        for inp in self.inputs:
            lanes = [self._lanes[s] for s in inp.speakers]
            out[inp.label.split()[0]] = DeviceStats(
                device=inp.label, rate=inp.rate, delivering=inp.delivering, blocks=inp.blocks,
                dropped_blocks=inp.dropped_blocks, dropped_seconds=inp.dropped_frames / inp.rate,
                overflows=inp.overflows, losses=inp.losses, reopens=inp.reopens,
                filled_seconds=max(lane.filled for lane in lanes) / self.sample_rate,
                trimmed_seconds=max(lane.trimmed for lane in lanes) / self.sample_rate,
                queue_max=inp.queue.maxsize, queue_peak=inp.queue_peak, max_callback_s=inp.max_cb_s)
        return out

    def __enter__(self) -> "DeviceSource":
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"DeviceSource({self.description!r})"


__all__ = ["DeviceInfo", "DeviceSource", "DeviceStats", "list_devices", "resolve_device"]
