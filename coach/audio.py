"""Call recordings streamed from disk as int16 mono channels at the recognizer's rate.

Contact-centre recorders write either one stereo file (agent on one side, customer on
the other) or two mono files per call. Both are read in blocks of a few seconds, mapped
to agent/customer channels, resampled and converted to int16 on the fly
(:func:`open_call`), so memory stays flat however long the call is: decoding a whole
60-minute call up front used to peak at 2.4 GB. :func:`load_call` still returns the
whole call as a :class:`CallAudio` for callers that want arrays, built from the same
stream and the same checks.

Every file is checked by :func:`probe` before any audio is decoded: a header is cheap
to read and is where absurd inputs show up (a 16 KB WAV claiming a 1 Hz sample rate
would otherwise become an 8000 s call). Every problem a user can fix is an
:class:`~coach.errors.AudioError` naming the file, the cause and the fix.

Truncated WAVs (the header promises more data than the file holds, e.g. a recording
copied while still being written) are read as far as the data goes, because the audio
that is there is usually exactly what the user wants to analyse; the shortfall is
reported in the warnings instead of raising. A header that cannot be parsed at all, or
a file that yields no samples, is an error.
"""
from __future__ import annotations

import math
import os
import stat
import struct
import threading
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import soundfile as sf
from scipy.signal import firwin, resample_poly, upfirdn

from .errors import AudioError
from .events import Speaker

_INT16_SCALE = 32768.0
BLOCK_S = 4.0  # seconds of source audio decoded at a time: large enough to be cheap, small enough to be flat
MAX_BLOCK_FRAMES = 1 << 18  # caps a block at high rates (0.7 s at 384 kHz) so a block stays a few MB


@dataclass(frozen=True)
class AudioLimits:
    """What a call recording may look like; anything outside is refused before decoding.

    The bounds are generous for real recordings (telephone 8 kHz to studio 384 kHz, a
    working day long) and catch corrupt or hostile headers before they cost memory.
    """

    min_rate: int = 4000
    max_rate: int = 384_000
    max_duration_s: float = 8 * 3600.0
    max_bytes: int = 4 * 1024 ** 3
    max_channels: int = 2


@dataclass(frozen=True)
class AudioInfo:
    """What :func:`probe` learnt from a file's header, without decoding its audio."""

    path: str
    sample_rate: int
    channels: int
    frames: int
    duration: float
    size: int
    format: str = ""
    subtype: str = ""
    warnings: tuple[str, ...] = ()

    def frames_at(self, rate: int) -> int:
        """Number of frames after resampling to ``rate`` (what :func:`resample` returns)."""
        return -(-self.frames * int(rate) // self.sample_rate)


@dataclass(frozen=True)
class CallAudio:
    """Both sides of one call as int16 mono arrays at ``sample_rate``.

    ``agent`` or ``customer`` is None when the recording has only the other side.
    ``source_rate`` is the rate of the (first) file before resampling; ``duration`` is
    the length in seconds of the longer channel; ``warnings`` lists non-fatal problems
    such as a truncated file, one line each, for the CLI to show.
    """

    agent: np.ndarray | None
    customer: np.ndarray | None
    sample_rate: int
    source_rate: int
    duration: float
    path: str
    warnings: tuple[str, ...] = ()

    def channel(self, speaker: Speaker) -> np.ndarray | None:
        return self.agent if speaker == Speaker.AGENT else self.customer


# --------------------------------------------------------------------------- checks


def _wav_truncation(path: Path) -> str | None:
    """Return a warning if a RIFF/WAVE file's data chunk claims more bytes than exist.

    libsndfile silently reads whatever is there, so the shortfall must be checked from
    the header ourselves. Non-RIFF files and streaming headers (size 0 or 0xFFFFFFFF)
    return None.
    """
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
                return None
            endian = "<" if head[:4] == b"RIFF" else ">"
            pos = 12
            while pos + 8 <= size:
                f.seek(pos)
                hdr = f.read(8)
                if len(hdr) < 8:
                    return None
                cid, csize = hdr[:4], struct.unpack(endian + "I", hdr[4:])[0]
                if cid == b"data":
                    if csize in (0, 0xFFFFFFFF):
                        return None
                    have = size - (pos + 8)
                    if have < csize:
                        pct = 100.0 * have / csize
                        return (f"{path} is truncated: its header announces {csize} bytes of audio "
                                f"but only {have} ({pct:.0f}%) are present; the available audio was used")
                    return None
                pos += 8 + csize + (csize & 1)
    except OSError:
        return None
    return None


def _not_regular(mode: int) -> str:
    """Name what a non-regular file is: opening a FIFO blocks and a device never ends,
    so they are refused by their stat before anything reads them."""
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _fmt_bytes(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def _fmt_duration(s: float) -> str:
    if s >= 3600:
        return f"{s / 3600:.1f} h"
    return f"{s / 60:.1f} min" if s >= 60 else f"{s:.1f} s"


def probe(path: str | os.PathLike, limits: AudioLimits = AudioLimits()) -> AudioInfo:
    """Check that ``path`` is a usable call recording and describe it, reading only its header.

    Each refusal is its own one-line :class:`AudioError` with the real cause (a FIFO is
    named as a FIFO, not as an empty file) and the fix, and none of them decodes audio,
    so a bad input is refused in milliseconds whatever its header claims.
    """
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise AudioError(f"audio file {p} does not exist", "check the path (and the working directory)") from None
    except PermissionError:
        raise AudioError(f"cannot look at {p}: permission denied on a folder in its path",
                         "check the folder permissions or copy the file somewhere readable") from None
    except OSError as e:
        raise AudioError(f"cannot access {p} ({e.strerror or type(e).__name__})", "check the path") from None
    if stat.S_ISDIR(st.st_mode):
        raise AudioError(f"{p} is a directory, not an audio file", "pass the path of a WAV/FLAC/OGG file inside it")
    if not stat.S_ISREG(st.st_mode):
        raise AudioError(f"{p} is {_not_regular(st.st_mode)}, not an audio file",
                         "save the recording to a regular WAV/FLAC/OGG file and pass that")
    if st.st_size == 0:
        raise AudioError(f"{p} is an empty file (0 bytes)", "re-export or re-copy the recording")
    if st.st_size > limits.max_bytes:
        raise AudioError(f"{p} is {_fmt_bytes(st.st_size)}, more than the "
                         f"{_fmt_bytes(limits.max_bytes)} a call may take",
                         "compress it to FLAC, split it into calls, or raise AudioLimits.max_bytes")
    try:
        with open(p, "rb") as f:
            f.read(12)
    except PermissionError:
        raise AudioError(f"{p} is not readable: permission denied",
                         f"make it readable (e.g. `chmod a+r {p}`) or copy it somewhere you can read") from None
    except OSError as e:
        raise AudioError(f"{p} could not be read ({e.strerror or type(e).__name__})",
                         "check the disk and re-copy the recording") from None
    try:
        with sf.SoundFile(str(p)) as f:
            rate, channels, frames = int(f.samplerate), int(f.channels), int(f.frames)
            fmt, subtype = str(f.format), str(f.subtype)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        detail = str(exc).split(":")[-1].strip() or type(exc).__name__
        raise AudioError(
            f"{p} is not a readable audio file ({detail})",
            "convert it to WAV (16-bit PCM) or FLAC, e.g. `sox in.xxx out.wav`",
        ) from None
    if frames <= 0:
        raise AudioError(f"{p} contains no audio frames", "record or export the call again")
    if not limits.min_rate <= rate <= limits.max_rate:
        raise AudioError(
            f"{p} claims a {rate} Hz sample rate, which no call recording has (the header is probably corrupt)",
            f"re-export it at a standard rate of at least {limits.min_rate} Hz and at most {limits.max_rate} Hz, "
            "e.g. 8000 or 16000 Hz",
        )
    if channels > limits.max_channels:
        raise AudioError(
            f"{p} has {channels} channels and it is ambiguous which two are the agent and the customer",
            "pass a stereo file (agent/customer on left/right) or two files, one per speaker",
        )
    duration = frames / rate
    if duration > limits.max_duration_s:
        raise AudioError(
            f"{p} lasts {_fmt_duration(duration)}, longer than the {_fmt_duration(limits.max_duration_s)} "
            "a call may last",
            "split it into calls (e.g. with `sox in.wav out.wav trim 0 1:00:00 : newfile : restart`) "
            "or raise AudioLimits.max_duration_s",
        )
    trunc = _wav_truncation(p)
    return AudioInfo(str(p), rate, channels, frames, duration, int(st.st_size), fmt, subtype,
                     (trunc,) if trunc else ())


# --------------------------------------------------------------------------- resampling


def resample(x: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Polyphase resampling (anti-aliased) of float samples between any two integer rates."""
    if from_rate == to_rate or len(x) == 0:
        return x
    g = math.gcd(int(from_rate), int(to_rate))
    return resample_poly(x, to_rate // g, from_rate // g, axis=0)


class StreamResampler:
    """:func:`resample` one block at a time, with the same output as on the whole signal.

    Uses scipy's own polyphase filter (the one :func:`scipy.signal.resample_poly` designs)
    and keeps only the input context the next outputs need (about 20 input samples per
    side for 8 -> 16 kHz, a few hundred for 44.1 -> 16 kHz), so memory does not depend on
    the length of the call, and the concatenated output of :meth:`process` and
    :meth:`flush` equals ``resample(x, from_rate, to_rate)`` up to float rounding.
    Blocks are 1-D (one channel) or 2-D (frames x channels), consistently.
    """

    def __init__(self, from_rate: int, to_rate: int) -> None:
        if from_rate <= 0 or to_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {from_rate} -> {to_rate}")
        g = math.gcd(int(from_rate), int(to_rate))
        self.from_rate, self.to_rate = int(from_rate), int(to_rate)
        self.up, self.down = self.to_rate // g, self.from_rate // g
        self.identity = self.up == self.down
        if not self.identity:
            max_rate = max(self.up, self.down)
            half_len = 10 * max_rate  # as resample_poly
            h = firwin(2 * half_len + 1, 1.0 / max_rate, window=("kaiser", 5.0)) * self.up
            pre = self.down - half_len % self.down
            self._h = np.concatenate([np.zeros(pre), h])
            self._skip = (half_len + pre) // self.down  # leading outputs resample_poly drops
        self.reset()

    def reset(self) -> None:
        """Forget all input: the next block starts a new signal."""
        self._buf: np.ndarray | None = None
        self._buf_start = 0  # input index of _buf[0]
        self._n_in = 0
        self._m = 0  # next output index
        self._empty = np.zeros((0,), np.float64)

    def _first_input(self, m: int) -> int:
        """Lowest input index output ``m`` depends on, rounded down to a multiple of
        ``down`` so that segment outputs stay on the whole signal's output grid."""
        lo = -(-((m + self._skip) * self.down - len(self._h) + 1) // self.up)
        return max(0, lo) // self.down * self.down

    def _emit(self, m_end: int) -> np.ndarray:
        m0 = self._m
        assert self._buf is not None
        if m_end <= m0:
            return self._buf[:0]
        i0 = self._first_input(m0)
        hi = min(self._n_in, ((m_end - 1 + self._skip) * self.down) // self.up + 1)
        seg = self._buf[i0 - self._buf_start:hi - self._buf_start]
        y = upfirdn(self._h, seg, self.up, self.down, axis=0)
        j0 = m0 + self._skip - i0 * self.up // self.down
        out = y[j0:j0 + (m_end - m0)]
        if len(out) < m_end - m0:  # beyond the filter's reach the signal is exactly zero
            pad = [(0, m_end - m0 - len(out))] + [(0, 0)] * (out.ndim - 1)
            out = np.pad(out, pad)
        self._m = m_end
        keep = self._first_input(m_end)
        self._buf = self._buf[max(0, keep - self._buf_start):]
        self._buf_start = max(self._buf_start, keep)
        return out

    def process(self, block: np.ndarray) -> np.ndarray:
        """Feed the next block; returns every output sample that no later input changes."""
        x = np.asarray(block, dtype=np.float64)
        if self.identity:
            self._n_in += len(x)
            self._empty = x[:0].copy()
            return x
        self._buf = x.copy() if self._buf is None else np.concatenate([self._buf, x], axis=0)
        self._n_in += len(x)
        return self._emit(max(self._m, -(-(self._n_in * self.up) // self.down) - self._skip))

    def flush(self) -> np.ndarray:
        """End of signal: the remaining outputs, as if zeros followed (as resample_poly pads)."""
        if self.identity or self._buf is None:
            return self._empty
        return self._emit(-(-(self._n_in * self.up) // self.down))


def to_int16(x: np.ndarray) -> np.ndarray:
    """Float samples in -1..1 to int16 with clipping (resampling can overshoot 1.0)."""
    y = np.rint(np.asarray(x, dtype=np.float64) * _INT16_SCALE)
    return np.clip(y, -32768, 32767).astype(np.int16)


# --------------------------------------------------------------------------- streaming


def _channel_index(agent_channel: str | int, path: Path) -> int:
    if isinstance(agent_channel, str):
        key = agent_channel.strip().lower()
        if key in ("left", "l", "0"):
            return 0
        if key in ("right", "r", "1"):
            return 1
        raise AudioError(f"agent_channel {agent_channel!r} is not a channel of {path}",
                         "use 'left' or 'right' (or 0/1)")
    if isinstance(agent_channel, (int, np.integer)) and int(agent_channel) in (0, 1):
        return int(agent_channel)
    raise AudioError(f"agent_channel {agent_channel!r} is not a channel of {path}", "use 'left' or 'right' (or 0/1)")


def _parse_speaker(mono_speaker: str | Speaker) -> Speaker:
    try:
        return Speaker(mono_speaker.value if isinstance(mono_speaker, Speaker) else str(mono_speaker).strip().lower())
    except ValueError:
        raise AudioError(f"mono_speaker {mono_speaker!r} is not a speaker", "use 'agent' or 'customer'") from None


class _FileReader:
    """One open file decoded block by block into the columns one call needs.

    ``mix`` turns a float64 (frames x channels) block into the wanted 1-D or 2-D float
    block (pick/reorder channels or downmix); resampling and int16 follow.
    """

    def __init__(self, info: AudioInfo, mix: Callable[[np.ndarray], np.ndarray], to_rate: int) -> None:
        self.info = info
        self.mix = mix
        self.to_rate = to_rate
        try:
            self.file: sf.SoundFile | None = sf.SoundFile(info.path)
        except (sf.LibsndfileError, RuntimeError, OSError) as exc:  # replaced or removed since probe
            detail = str(exc).split(":")[-1].strip() or type(exc).__name__
            raise AudioError(f"{info.path} could not be opened ({detail})", "check the file was not moved") from None

    def blocks(self, lock: threading.Lock, block_s: float) -> Iterator[np.ndarray]:
        """int16 blocks (1-D or frames x columns) from the start of the file to its end."""
        n = int(min(max(block_s * self.info.sample_rate, 4096), MAX_BLOCK_FRAMES))
        buf = np.empty((n, self.info.channels), np.float64)  # reused: every later stage copies
        rs = StreamResampler(self.info.sample_rate, self.to_rate)
        with lock:
            if self.file is None or self.file.closed:
                return
            self.file.seek(0)
        while True:
            with lock:  # close() from another thread waits for the read to finish
                if self.file is None or self.file.closed:
                    return
                data = self.file.read(n, dtype="float64", always_2d=True, out=buf)
            if len(data) == 0:
                break
            y = rs.process(self.mix(data))
            if len(y):
                yield to_int16(y)
        y = rs.flush()
        if len(y):
            yield to_int16(y)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def _columns(a: np.ndarray) -> tuple[np.ndarray, ...]:
    return (a,) if a.ndim == 1 else tuple(np.ascontiguousarray(a[:, k]) for k in range(a.shape[1]))


class CallStream:
    """A call opened for streaming: its speakers, its length, and int16 blocks per speaker.

    Made by :func:`open_call`, which has already run every check, so iterating
    :meth:`blocks` can only fail on I/O. Holds the open file handles until
    :meth:`close` (thread-safe: a close from another thread waits for the block being
    read and ends the iteration).
    """

    def __init__(self, readers: Sequence[_FileReader], speakers: tuple[Speaker, ...], sample_rate: int,
                 warnings: tuple[str, ...]) -> None:
        self._readers = list(readers)
        self.speakers = speakers
        self.sample_rate = sample_rate
        self.infos = tuple(r.info for r in readers)
        self.frames = max(i.frames_at(sample_rate) for i in self.infos)
        self.duration = self.frames / sample_rate
        self.warnings = warnings
        self._lock = threading.Lock()

    @property
    def closed(self) -> bool:
        return all(r.file is None for r in self._readers)

    def blocks(self, block_s: float = BLOCK_S) -> Iterator[tuple[np.ndarray, ...]]:
        """From the start of the call: one contiguous int16 array per speaker (in
        :attr:`speakers` order), all the same length, consecutive in time.

        Two files are resampled separately and aligned sample by sample; the one that
        ends first continues as silence, as :func:`load_call` pads it.
        """
        if len(self._readers) == 1:
            for blk in self._readers[0].blocks(self._lock, block_s):
                yield _columns(blk)
            return
        its = [r.blocks(self._lock, block_s) for r in self._readers]
        bufs = [np.zeros(0, np.int16) for _ in its]
        done = [False] * len(its)
        while True:
            live = [k for k in range(len(its)) if not done[k]]
            if live:  # pull from the stream that is furthest behind: buffers stay a block long
                k = min(live, key=lambda i: len(bufs[i]))
                blk = next(its[k], None)
                if blk is None:
                    done[k] = True
                else:
                    bufs[k] = np.concatenate([bufs[k], blk]) if len(bufs[k]) else blk
                live = [k for k in range(len(its)) if not done[k]]
            n = min(len(bufs[k]) for k in live) if live else max(len(b) for b in bufs)
            if n:
                out = []
                for k, b in enumerate(bufs):
                    head = b[:n]
                    out.append(head if len(head) == n else np.pad(head, (0, n - len(head))))
                    bufs[k] = b[n:]
                yield tuple(out)
            elif not live:
                return

    def close(self) -> None:
        """Release the file handles; idempotent and safe from any thread."""
        with self._lock:
            for r in self._readers:
                r.close()

    def __enter__(self) -> CallStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_call(
    path: str | os.PathLike,
    customer_path: str | os.PathLike | None = None,
    *,
    agent_channel: str | int = "left",
    mono_speaker: str | Speaker = "customer",
    sample_rate: int = 16000,
    limits: AudioLimits = AudioLimits(),
) -> CallStream:
    """Probe and open a call for streaming at ``sample_rate`` (see :func:`load_call` for
    the channel mapping). Raises :class:`AudioError` before any audio is decoded."""
    if int(sample_rate) <= 0:
        raise AudioError(f"target sample rate {sample_rate} Hz is not positive", "use e.g. 16000")
    sr = int(sample_rate)
    p = Path(path)
    info = probe(p, limits)
    if customer_path is not None:
        cinfo = probe(customer_path, limits)
        warnings = list(info.warnings + cinfo.warnings)
        gap = info.duration - cinfo.duration
        if abs(gap) > 1.0:
            short, long_ = (cinfo, info) if gap > 0 else (info, cinfo)
            warnings.append(f"{short.path} is {abs(gap):.1f} s shorter than {long_.path}; "
                            "it was padded with silence at the end")
        downmix = lambda d: d.mean(axis=1)  # noqa: E731
        readers = [_FileReader(info, downmix, sr)]
        try:
            readers.append(_FileReader(cinfo, downmix, sr))
        except AudioError:
            readers[0].close()
            raise
        return CallStream(readers, (Speaker.AGENT, Speaker.CUSTOMER), sr, tuple(warnings))

    idx = _channel_index(agent_channel, p)
    if info.channels == 1:
        if idx != 0:
            raise AudioError(
                f"{p} is mono, so it has no {'right' if idx == 1 else idx} channel for the agent",
                "drop agent_channel for a mono file (use mono_speaker to say who is talking) or pass a stereo file",
            )
        who = _parse_speaker(mono_speaker)
        reader = _FileReader(info, lambda d: d[:, 0], sr)
        return CallStream([reader], (who,), sr, info.warnings)
    order = [idx, 1 - idx]
    reader = _FileReader(info, lambda d: d[:, order], sr)
    return CallStream([reader], (Speaker.AGENT, Speaker.CUSTOMER), sr, info.warnings)


def load_call(path: str | os.PathLike, customer_path: str | os.PathLike | None = None, **options: Any) -> CallAudio:
    """Load a call recording as agent/customer channels at ``sample_rate``; ``options``
    are :func:`open_call`'s (``agent_channel``, ``mono_speaker``, ``sample_rate``, ``limits``).

    - one mono file: it is ``mono_speaker``'s channel; the other is None.
    - one stereo file: ``agent_channel`` ("left"/"right" or 0/1) is the agent, the
      other channel the customer.
    - two files (``path`` = agent, ``customer_path`` = customer): each is downmixed to
      mono and resampled on its own; the shorter is padded with silence.
    Files with more than two channels are refused: which two are the call is a guess.
    Built on :func:`open_call`, so the only whole-call memory is the int16 result
    (about 115 MB per stereo hour at 16 kHz); prefer streaming for long calls.
    """
    with open_call(path, customer_path, **options) as call:
        outs = [np.zeros(call.frames, np.int16) for _ in call.speakers]
        pos = 0
        for blk in call.blocks():
            n = len(blk[0])
            if pos + n > len(outs[0]):  # the header under-counted: grow (rare)
                outs = [np.concatenate([o, np.zeros(max(n, len(o) // 2), np.int16)]) for o in outs]
            for o, b in zip(outs, blk):
                o[pos:pos + n] = b
            pos += n
        chans = {s: o[:pos] for s, o in zip(call.speakers, outs)}
        return CallAudio(chans.get(Speaker.AGENT), chans.get(Speaker.CUSTOMER), call.sample_rate,
                         call.infos[0].sample_rate, pos / call.sample_rate, str(Path(path)), call.warnings)


# --------------------------------------------------------------------------- helpers


def chunk_audio(samples: np.ndarray, sample_rate: int, chunk_s: float = 0.1) -> list[np.ndarray]:
    """Split samples into consecutive blocks of ``chunk_s`` seconds (last may be short).

    Used to replay a file as if it came from a live stream; blocks are views, no copy.
    """
    n = max(1, int(round(chunk_s * sample_rate)))
    return [samples[i:i + n] for i in range(0, len(samples), n)]


def write_wav(path: str | os.PathLike, channels: Sequence[np.ndarray], sample_rate: int) -> Path:
    """Write one or more equal-length channels as a 16-bit PCM WAV (tests and scripts).

    Float arrays are taken as -1..1 and converted with clipping; int16 is written as is.
    """
    if not channels:
        raise AudioError(f"no channels given to write to {path}", "pass at least one array")
    cols = [c if np.asarray(c).dtype == np.int16 else to_int16(c) for c in channels]
    n = max(len(c) for c in cols)
    frames = np.stack([np.pad(np.asarray(c), (0, n - len(c))) for c in cols], axis=1)
    out = Path(path)
    with wave.open(str(out), "wb") as w:
        w.setnchannels(len(cols))
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(frames.astype("<i2").tobytes())
    return out


__all__ = [
    "AudioInfo", "AudioLimits", "BLOCK_S", "CallAudio", "CallStream", "StreamResampler", "chunk_audio",
    "load_call", "open_call", "probe", "resample", "to_int16", "write_wav",
]
