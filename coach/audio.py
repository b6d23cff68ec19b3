"""Loading call recordings into two int16 mono channels at the recognizer's rate.

Contact-centre recorders write either one stereo file (agent on one side, customer on
the other) or two mono files per call; both end up as a :class:`CallAudio` whose
channels are already resampled, so the recognizers never see a rate they did not ask
for. Every problem a user can fix is an :class:`~coach.errors.AudioError` naming the
file, the cause and the fix.

Truncated WAVs (the header promises more data than the file holds, e.g. a recording
copied while still being written) are loaded as far as the data goes, because the
audio that is there is usually exactly what the user wants to analyse; the shortfall
is reported in :attr:`CallAudio.warnings` instead of raising. A header that cannot be
parsed at all, or a file that yields no samples, is an error.
"""
from __future__ import annotations

import math
import os
import struct
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from .errors import AudioError
from .events import Speaker

_INT16_SCALE = 32768.0


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


# --------------------------------------------------------------------------- reading


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


def _read_file(path: str | os.PathLike) -> tuple[np.ndarray, int, list[str]]:
    """Read any soundfile-supported file as float64 frames x channels, with checks."""
    p = Path(path)
    if not p.exists():
        raise AudioError(f"audio file {p} does not exist", "check the path (and the working directory)")
    if p.is_dir():
        raise AudioError(f"{p} is a directory, not an audio file", "pass the path of a WAV/FLAC/OGG file inside it")
    if p.stat().st_size == 0:
        raise AudioError(f"{p} is an empty file (0 bytes)", "re-export or re-copy the recording")
    warnings: list[str] = []
    trunc = _wav_truncation(p)
    if trunc:
        warnings.append(trunc)
    try:
        data, rate = sf.read(str(p), dtype="float64", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        detail = str(exc).split(":")[-1].strip() or type(exc).__name__
        raise AudioError(
            f"{p} is not a readable audio file ({detail})",
            "convert it to WAV (16-bit PCM) or FLAC, e.g. `sox in.xxx out.wav`",
        ) from None
    if data.shape[0] == 0:
        raise AudioError(f"{p} contains no audio frames", "record or export the call again")
    if rate <= 0:
        raise AudioError(f"{p} has an invalid sample rate {rate}", "re-export it with a standard rate such as 16000 Hz")
    return data, int(rate), warnings


def resample(x: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Polyphase resampling (anti-aliased) of float samples between any two integer rates."""
    if from_rate == to_rate or len(x) == 0:
        return x
    g = math.gcd(int(from_rate), int(to_rate))
    return resample_poly(x, to_rate // g, from_rate // g, axis=0)


def to_int16(x: np.ndarray) -> np.ndarray:
    """Float samples in -1..1 to int16 with clipping (resampling can overshoot 1.0)."""
    y = np.rint(np.asarray(x, dtype=np.float64) * _INT16_SCALE)
    return np.clip(y, -32768, 32767).astype(np.int16)


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


def load_call(
    path: str | os.PathLike,
    customer_path: str | os.PathLike | None = None,
    *,
    agent_channel: str | int = "left",
    mono_speaker: str | Speaker = "customer",
    sample_rate: int = 16000,
) -> CallAudio:
    """Load a call recording as agent/customer channels at ``sample_rate``.

    - one mono file: it is ``mono_speaker``'s channel; the other is None.
    - one stereo file: ``agent_channel`` ("left"/"right" or 0/1) is the agent, the
      other channel the customer.
    - two files (``path`` = agent, ``customer_path`` = customer): each is downmixed to
      mono and resampled on its own; the shorter is padded with silence.
    Files with more than two channels are refused: which two are the call is a guess.
    """
    p = Path(path)
    data, rate, warnings = _read_file(p)
    if customer_path is not None:
        cp = Path(customer_path)
        cdata, crate, cwarn = _read_file(cp)
        warnings += cwarn
        agent = to_int16(resample(data.mean(axis=1), rate, sample_rate))
        customer = to_int16(resample(cdata.mean(axis=1), crate, sample_rate))
        n = max(len(agent), len(customer))
        agent = np.pad(agent, (0, n - len(agent)))
        customer = np.pad(customer, (0, n - len(customer)))
        return CallAudio(agent, customer, sample_rate, rate, n / sample_rate, str(p), tuple(warnings))

    nch = data.shape[1]
    if nch > 2:
        raise AudioError(
            f"{p} has {nch} channels and it is ambiguous which two are the agent and the customer",
            "pass a stereo file (agent/customer on left/right) or two files, one per speaker",
        )
    if nch == 1:
        idx = _channel_index(agent_channel, p)
        if idx != 0:
            raise AudioError(
                f"{p} is mono, so it has no {'right' if idx == 1 else idx} channel for the agent",
                "drop agent_channel for a mono file (use mono_speaker to say who is talking) or pass a stereo file",
            )
        mono = to_int16(resample(data[:, 0], rate, sample_rate))
        who = _parse_speaker(mono_speaker)
        agent, customer = (mono, None) if who == Speaker.AGENT else (None, mono)
        return CallAudio(agent, customer, sample_rate, rate, len(mono) / sample_rate, str(p), tuple(warnings))

    idx = _channel_index(agent_channel, p)
    both = resample(data, rate, sample_rate)
    agent = to_int16(both[:, idx])
    customer = to_int16(both[:, 1 - idx])
    return CallAudio(agent, customer, sample_rate, rate, len(agent) / sample_rate, str(p), tuple(warnings))


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


__all__ = ["CallAudio", "chunk_audio", "load_call", "resample", "to_int16", "write_wav"]
