"""Where a call comes from: the one contract the pipeline consumes (open, stream, close).

The shape follows whisper_streaming / RealtimeSTT: a source is opened (and validated)
once, then streamed, then closed. A recording on disk and a live sound device differ
only in ``live`` and ``duration``, so :meth:`Pipeline.run` treats them the same and a
replay shows QA exactly what the agent would have seen.

File sources read and resample a few seconds at a time (:func:`coach.audio.open_call`)
and hand out 100 ms chunks cut from those blocks, so memory stays flat whatever the
call's length: nothing holds the whole call, and the pipeline's bounded queues bound
what is in flight. A transcript made elsewhere is a source of utterances instead of
audio; it skips the recognizers but goes through the same scoring and coaching.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator, Literal, Protocol, runtime_checkable

import numpy as np

from .audio import AudioLimits, CallStream, open_call
from .errors import AudioError, TranscriptError
from .events import AudioChunk, Speaker, Utterance
from .transcript import load_transcript, looks_like_transcript


@runtime_checkable
class AudioSource(Protocol):
    """A call as audio: chunks per speaker at the recognizer's rate.

    The attributes describe the call once :meth:`open` has returned.
    """

    kind: Literal["audio"]
    speakers: tuple[Speaker, ...]  # the channels present
    sample_rate: int  # rate of the chunks it yields (the recognizer's rate)
    duration: float | None  # seconds, None when unknown (a live device)
    live: bool  # True: chunks arrive in real time, the pipeline never paces them
    description: str  # one line for the user, e.g. "call.wav (245.0 s, 8000 Hz, stereo)"
    warnings: tuple[str, ...]

    def open(self) -> None: ...
    def chunks(self, chunk_s: float = 0.1) -> Iterator[tuple[AudioChunk, ...]]: ...
    def close(self) -> None: ...


@runtime_checkable
class UtteranceSource(Protocol):
    """A call as finished utterances (a transcript made elsewhere), sorted by (end, start)."""

    kind: Literal["utterances"]
    speakers: tuple[Speaker, ...]
    duration: float | None
    live: bool
    description: str
    warnings: tuple[str, ...]

    def open(self) -> None: ...
    def utterances(self) -> Iterator[Utterance]: ...
    def close(self) -> None: ...


def _rechunk(blocks: Iterator[tuple[np.ndarray, ...]], speakers: tuple[Speaker, ...], sample_rate: int,
             chunk_s: float) -> Iterator[tuple[AudioChunk, ...]]:
    """Cut equal-length per-speaker blocks into chunks of ``chunk_s`` (the last may be short).

    Chunk times are sample index / rate, never a running sum, so they do not drift; the
    samples are views into the current block (only a remainder shorter than one chunk is
    copied across block boundaries).
    """
    if not chunk_s > 0:
        raise AudioError(f"chunk length {chunk_s} s is not positive", "use e.g. 0.1 s")
    step = max(1, int(round(chunk_s * sample_rate)))
    pos = 0
    carry: tuple[np.ndarray, ...] | None = None
    for blk in blocks:
        if carry is not None and len(carry[0]):
            blk = tuple(np.concatenate([c, b]) for c, b in zip(carry, blk))
        n = len(blk[0])
        full = n - n % step
        for s in range(0, full, step):
            t = pos / sample_rate
            yield tuple(AudioChunk(spk, t, a[s:s + step], sample_rate) for spk, a in zip(speakers, blk))
            pos += step
        carry = tuple(a[full:] for a in blk)
    if carry is not None and len(carry[0]):
        t = pos / sample_rate
        yield tuple(AudioChunk(spk, t, a, sample_rate) for spk, a in zip(speakers, carry))


class _CallFileSource:
    """Shared by the file sources: open = probe + open handles; chunks stream and close at the end."""

    kind: Literal["audio"] = "audio"
    live = False

    def __init__(self, name: str, sample_rate: int, limits: AudioLimits) -> None:
        self.sample_rate = int(sample_rate)
        self.limits = limits
        self.speakers: tuple[Speaker, ...] = ()
        self.duration: float | None = None
        self.description = name
        self.warnings: tuple[str, ...] = ()
        self._call: CallStream | None = None

    def _open_call(self) -> CallStream:  # pragma: no cover - overridden
        raise NotImplementedError

    def _describe(self, call: CallStream) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    def open(self) -> None:
        """Validate the file(s) (:func:`coach.audio.probe`) and open them; raises
        :class:`AudioError`. Idempotent; reopens after :meth:`close`."""
        if self._call is not None:
            return
        call = self._open_call()
        self._call = call
        self.speakers = call.speakers
        self.duration = call.duration
        self.warnings = call.warnings
        self.description = self._describe(call)

    def chunks(self, chunk_s: float = 0.1) -> Iterator[tuple[AudioChunk, ...]]:
        """From the start of the call: one chunk per speaker (``speakers`` order), all at
        the same call time ``t``, consecutive and in time order. Opens the source if
        needed and closes it once the call is exhausted (or the iterator is dropped)."""
        self.open()
        call = self._call
        assert call is not None
        try:
            yield from _rechunk(call.blocks(), call.speakers, call.sample_rate, chunk_s)
        finally:
            if self._call is call:
                self.close()

    def close(self) -> None:
        """Release the file handle(s); idempotent, safe from another thread (Ctrl-C)."""
        call, self._call = self._call, None
        if call is not None:
            call.close()

    def __enter__(self):
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.description!r})"


class FileSource(_CallFileSource):
    """One mono or stereo recording, streamed from disk.

    Stereo: ``agent_channel`` ("left"/"right" or 0/1) is the agent, the other side the
    customer. Mono: the file is ``mono_speaker``'s channel and the only speaker.
    """

    def __init__(self, path: str | os.PathLike, *, agent_channel: str | int = "left",
                 mono_speaker: str | Speaker = "customer", sample_rate: int = 16000,
                 limits: AudioLimits = AudioLimits()) -> None:
        super().__init__(Path(path).name, sample_rate, limits)
        self.path = Path(path)
        self.agent_channel = agent_channel
        self.mono_speaker = mono_speaker

    def _open_call(self) -> CallStream:
        return open_call(self.path, agent_channel=self.agent_channel, mono_speaker=self.mono_speaker,
                         sample_rate=self.sample_rate, limits=self.limits)

    def _describe(self, call: CallStream) -> str:
        info = call.infos[0]
        layout = "stereo" if info.channels == 2 else f"mono, {call.speakers[0].value}"
        return f"{self.path.name} ({call.duration:.1f} s, {info.sample_rate} Hz, {layout})"


class TwoFileSource(_CallFileSource):
    """One recording per speaker, streamed together.

    Each file is downmixed to mono and resampled on its own; the one that ends first
    continues as silence so both channels always advance together.
    """

    def __init__(self, agent_path: str | os.PathLike, customer_path: str | os.PathLike, *,
                 sample_rate: int = 16000, limits: AudioLimits = AudioLimits()) -> None:
        super().__init__(f"{Path(agent_path).name} + {Path(customer_path).name}", sample_rate, limits)
        self.agent_path = Path(agent_path)
        self.customer_path = Path(customer_path)

    def _open_call(self) -> CallStream:
        return open_call(self.agent_path, self.customer_path, sample_rate=self.sample_rate, limits=self.limits)

    def _describe(self, call: CallStream) -> str:
        a, c = call.infos
        rates = f"{a.sample_rate} Hz" if a.sample_rate == c.sample_rate else f"{a.sample_rate}/{c.sample_rate} Hz"
        return (f"{self.agent_path.name} + {self.customer_path.name} "
                f"({call.duration:.1f} s, {rates}, one file per speaker)")


class TranscriptSource:
    """Utterances from a transcript JSON (see README 'Transcript format').

    Transcripts are small, so :meth:`open` loads and validates the whole file; errors
    are :class:`~coach.errors.TranscriptError` from :func:`coach.transcript.load_transcript`.
    """

    kind: Literal["utterances"] = "utterances"
    live = False

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.speakers: tuple[Speaker, ...] = ()
        self.duration: float | None = None
        self.description = self.path.name
        self.warnings: tuple[str, ...] = ()
        self._utts: list[Utterance] | None = None

    def open(self) -> None:
        """Load and validate the transcript; idempotent."""
        if self._utts is not None:
            return
        utts = sorted(load_transcript(self.path), key=lambda u: (u.end, u.start))
        self._utts = utts
        present = {u.speaker for u in utts}
        self.speakers = tuple(s for s in Speaker if s in present)
        self.duration = max((u.end for u in utts), default=0.0)
        self.warnings = () if utts else (f"{self.path} has no utterances with text; there is nothing to coach",)
        self.description = f"{self.path.name} (transcript, {len(utts)} utterances, {self.duration:.1f} s)"

    def utterances(self) -> Iterator[Utterance]:
        """Every utterance, sorted by (end, start): the order the coach would have heard them."""
        self.open()
        assert self._utts is not None
        yield from list(self._utts)

    def close(self) -> None:
        self._utts = None

    def __enter__(self) -> TranscriptSource:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TranscriptSource({self.description!r})"


class ArraySource:
    """A call already in memory (int16 arrays at ``sample_rate``): tests, benchmarks and
    callers that synthesise or capture audio themselves. ``None`` for an absent side."""

    kind: Literal["audio"] = "audio"
    live = False

    def __init__(self, agent: np.ndarray | None, customer: np.ndarray | None, sample_rate: int) -> None:
        chans = [(s, np.asarray(a, dtype=np.int16)) for s, a in ((Speaker.AGENT, agent), (Speaker.CUSTOMER, customer))
                 if a is not None]
        if not chans:
            raise AudioError("an ArraySource needs at least one channel", "pass the agent's or the customer's samples")
        n = max(len(a) for _, a in chans)
        self._arrays = tuple(np.pad(a, (0, n - len(a))) for _, a in chans)
        self.speakers = tuple(s for s, _ in chans)
        self.sample_rate = int(sample_rate)
        self.duration = n / self.sample_rate
        self.description = f"in-memory call ({self.duration:.1f} s)"
        self.warnings: tuple[str, ...] = ()

    def open(self) -> None:
        pass

    def chunks(self, chunk_s: float = 0.1) -> Iterator[tuple[AudioChunk, ...]]:
        yield from _rechunk(iter([self._arrays]), self.speakers, self.sample_rate, chunk_s)

    def close(self) -> None:
        pass


class UtteranceListSource:
    """Utterances already in memory (a transcript parsed elsewhere, a test's script)."""

    kind: Literal["utterances"] = "utterances"
    live = False

    def __init__(self, utterances: "list[Utterance] | tuple[Utterance, ...]", description: str = "utterances") -> None:
        self._utts = sorted(utterances, key=lambda u: (u.end, u.start))
        self.speakers = tuple(Speaker)
        self.duration = self._utts[-1].end if self._utts else 0.0
        self.description = description
        self.warnings: tuple[str, ...] = ()

    def open(self) -> None:
        pass

    def utterances(self) -> Iterator[Utterance]:
        return iter(self._utts)

    def close(self) -> None:
        pass


def open_source(call: str | os.PathLike, customer_file: str | os.PathLike | None = None,
                **options: Any) -> AudioSource | UtteranceSource:
    """The source for a call given on the command line, already opened. ``options`` are
    :func:`coach.audio.open_call`'s (``agent_channel``, ``mono_speaker``, ``sample_rate``,
    ``limits``); a two-file call takes no channel map.

    ``.json`` is a transcript (:func:`coach.transcript.looks_like_transcript`), anything
    else audio: one file, or agent + customer files. Opening validates the input here,
    so a bad file is reported before any model is loaded; use the result as a context
    manager (or call ``close()``) to release the file handles.
    """
    src: AudioSource | UtteranceSource
    if looks_like_transcript(call):
        if customer_file is not None:
            raise TranscriptError(
                f"{call} is a transcript, which already holds both speakers, so the customer file "
                f"{customer_file} cannot be added to it",
                "drop the customer file, or pass the agent's audio instead of the transcript",
            )
        src = TranscriptSource(call)
    elif customer_file is not None:
        if looks_like_transcript(customer_file):
            raise AudioError(f"customer file {customer_file} is a transcript, not audio",
                             "pass the customer's recording, or the transcript alone as the call")
        two = {k: v for k, v in options.items() if k in ("sample_rate", "limits")}
        src = TwoFileSource(call, customer_file, **two)
    else:
        src = FileSource(call, **options)
    src.open()
    return src


__all__ = ["ArraySource", "AudioSource", "FileSource", "UtteranceListSource", "TranscriptSource", "TwoFileSource", "UtteranceSource", "open_source"]
