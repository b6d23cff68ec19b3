"""The chain that turns a call into coaching: source -> recognizers -> scoring -> coach.

Threads and bounded queues, one job each (the vosk/pipecat pattern):

* a **source** thread cuts the call into :class:`AudioChunk` s (paced in real time, or
  as fast as the recognizers take them) and does nothing else; the live source will
  be an audio callback doing the same;
* one **recognizer** thread per channel feeds its own recognizer from the shared model;
* one **coach** thread merges both channels in call-time order (a channel's utterance
  is released only once the other channel's recognizer has caught up to it), scores
  customer utterances in batches, updates the trajectories and runs the playbook.

Replay and live differ only in the source, so QA sees exactly what an agent would have
seen. The pure parts (:class:`CoachCore`, :class:`Scorer`) are usable on their own.
"""
from __future__ import annotations

import enum
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

import numpy as np

from .errors import CoachError
from .events import (AudioChunk, CallEnd, Event, Partial, Prompt, ScoredUtterance, Scores, Speaker,
                     TrajectoryState, Utterance)
from .playbook import Playbook, PlaybookConfig
from .trajectory import Trajectory

CHUNK_S = 0.1  # 100 ms chunks: small enough for timely partials, large enough to be cheap
QUEUE_SIZE = 64
POLL_S = 0.05  # how often blocked threads look at the stop flag


class Speed(enum.Enum):
    FAST = "fast"
    REALTIME = "realtime"


@dataclass(frozen=True)
class ReplayOptions:
    """How to pace a replay. ``rate`` > 1 plays faster than real time (realtime only)."""

    speed: Speed = Speed.FAST
    rate: float = 1.0
    chunk_s: float = CHUNK_S
    partials: bool = True


class TextClassifier(Protocol):
    def embed(self, texts: Sequence[str]) -> np.ndarray: ...
    def classify_embeddings(self, emb: np.ndarray) -> list[Scores]: ...


# ---------------------------------------------------------------- pure stages


def confident_text(u: Utterance, min_word_conf: float) -> str:
    """The words the recognizer was reasonably sure of; low-confidence words are
    dropped so that misrecognised audio cannot invent abuse or threats."""
    if not u.words:
        return u.text
    return " ".join(w.word for w in u.words if w.conf >= min_word_conf)


class Scorer:
    """Classifies customer utterances and embeds both sides, a batch at a time."""

    def __init__(self, classifier: TextClassifier, min_word_conf: float = 0.3) -> None:
        self.clf = classifier
        self.min_word_conf = min_word_conf

    def score(self, utts: Sequence[Utterance]) -> list[tuple[ScoredUtterance, np.ndarray | None]]:
        texts = [confident_text(u, self.min_word_conf) for u in utts]
        keep = [i for i, t in enumerate(texts) if t.strip()]
        emb: dict[int, np.ndarray] = {}
        scores: dict[int, Scores] = {}
        if keep:
            vecs = self.clf.embed([texts[i] for i in keep])
            emb = {i: vecs[k] for k, i in enumerate(keep)}
            cust = [i for i in keep if utts[i].speaker is Speaker.CUSTOMER]
            if cust:  # one encoder pass per utterance: the embedding serves both jobs
                scores = dict(zip(cust, self.clf.classify_embeddings(np.stack([emb[i] for i in cust]))))
        return [(ScoredUtterance(u, scores.get(i)), emb.get(i)) for i, u in enumerate(utts)]


class CoachCore:
    """Trajectories and playbook for one call: pure and synchronous, call time only."""

    def __init__(self, playbook: PlaybookConfig) -> None:
        self.trajectories = {s: Trajectory(s, playbook.trajectory) for s in Speaker}
        self.playbook = Playbook(playbook)
        self.t = 0.0

    def process(self, item: ScoredUtterance, embedding: np.ndarray | None = None) -> list[Event]:
        u = item.utterance
        self.t = max(self.t, u.end)
        state = self.trajectories[u.speaker].update(item)
        self.playbook.on_trajectory(state)
        prompts = self.playbook.on_utterance(item, embedding)
        return [item, state, *prompts]

    def finish(self, t: float | None = None) -> list[Event]:
        end = max(self.t, t or 0.0)
        return [*self.playbook.finish(end), CallEnd(end)]


# ---------------------------------------------------------------- threaded pipeline


@dataclass(frozen=True)
class _Watermark:
    """A recognizer has consumed all audio of its channel up to ``t``."""

    speaker: Speaker
    t: float


@dataclass(frozen=True)
class _Done:
    speaker: Speaker


@dataclass
class CallSummary:
    """What a finished (or stopped) run produced, for the CLI's closing lines."""

    duration: float = 0.0
    utterances: dict[str, int] = field(default_factory=lambda: {"agent": 0, "customer": 0})
    prompts_opened: list[Prompt] = field(default_factory=list)
    peak: str = "calm"
    wall_s: float = 0.0
    stopped: bool = False


class Pipeline:
    """Runs one call through the coach and hands every event to ``sink`` in call order.

    ``sink`` is called from the coach thread only, so it needs no locking. ``stop()``
    may be called from any thread (Ctrl-C): every stage drains within ``POLL_S``.
    """

    def __init__(self, *, scorer: Scorer, playbook: PlaybookConfig, sink: Callable[[Event], None],
                 engine=None, options: ReplayOptions = ReplayOptions()) -> None:
        self.engine = engine
        self.scorer = scorer
        self.playbook = playbook
        self.sink = sink
        self.opt = options
        self._stop = threading.Event()
        self._errors: list[BaseException] = []
        self._merge: queue.Queue = queue.Queue(maxsize=QUEUE_SIZE * 4)

    def stop(self) -> None:
        self._stop.set()

    # -- plumbing helpers

    def _put(self, q: queue.Queue, item) -> bool:
        """Blocking put that gives up when the pipeline is stopping (no hang on shutdown)."""
        while not self._stop.is_set():
            try:
                q.put(item, timeout=POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _guard(self, fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except BaseException as e:  # surfaced to the caller of run_*
                self._errors.append(e)
                self._stop.set()
        return run

    def _pace(self, t0_wall: float, t_call: float) -> None:
        if self.opt.speed is Speed.REALTIME:
            delay = t0_wall + t_call / self.opt.rate - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)

    # -- sources

    def run_audio(self, call) -> CallSummary:
        """Replay a :class:`coach.audio.CallAudio` through recognizers and the coach."""
        if self.engine is None:
            raise CoachError("no speech recognizer is loaded", "open an engine with coach.stt.open_engine()")
        channels = {s: a for s, a in ((Speaker.AGENT, call.agent), (Speaker.CUSTOMER, call.customer)) if a is not None}
        queues = {s: queue.Queue(maxsize=QUEUE_SIZE) for s in channels}
        sr = call.sample_rate
        step = max(1, int(round(self.opt.chunk_s * sr)))
        n = max(len(a) for a in channels.values())

        def source() -> None:
            t0 = time.monotonic()
            for start in range(0, n, step):
                t = start / sr
                self._pace(t0, t)
                for s, audio in channels.items():
                    block = audio[start:start + step]
                    if len(block) and not self._put(queues[s], AudioChunk(s, t, block, sr)):
                        return
            for s in channels:
                self._put(queues[s], CallEnd(n / sr))

        def recognize(speaker: Speaker) -> Callable[[], None]:
            def run() -> None:
                rec = self.engine.recognizer(speaker)  # it also measures each utterance's loudness
                q = queues[speaker]
                while not self._stop.is_set():
                    try:
                        item = q.get(timeout=POLL_S)
                    except queue.Empty:
                        continue
                    if isinstance(item, CallEnd):
                        for u in rec.finish():
                            self._put(self._merge, u)
                        self._put(self._merge, _Done(speaker))
                        return
                    for ev in rec.accept(item):
                        if isinstance(ev, Partial) and not self.opt.partials:
                            continue
                        self._put(self._merge, ev)
                    self._put(self._merge, _Watermark(speaker, item.t + item.duration))
            return run

        threads = [threading.Thread(target=self._guard(source), name="coach-source", daemon=True)]
        threads += [threading.Thread(target=self._guard(recognize(s)), name=f"coach-stt-{s.value}", daemon=True)
                    for s in channels]
        return self._run(threads, set(channels), n / sr)

    def run_transcript(self, utterances: Sequence[Utterance]) -> CallSummary:
        """Replay utterances transcribed elsewhere through the same scoring and coach."""
        ordered = sorted(utterances, key=lambda u: (u.end, u.start))
        end = ordered[-1].end if ordered else 0.0

        def source() -> None:
            t0 = time.monotonic()
            for u in ordered:
                self._pace(t0, u.end)
                if not self._put(self._merge, u):
                    return
                # One ordered source: both channels have advanced to this utterance's end.
                for s in Speaker:
                    self._put(self._merge, _Watermark(s, u.end))
            for s in Speaker:
                self._put(self._merge, _Done(s))

        threads = [threading.Thread(target=self._guard(source), name="coach-source", daemon=True)]
        return self._run(threads, set(Speaker), end)

    # -- the coach thread (runs in the caller's thread: one less thread to join)

    def _run(self, threads: list[threading.Thread], active: set[Speaker], duration: float) -> CallSummary:
        wall0 = time.monotonic()
        summary = CallSummary(duration=duration)
        core = CoachCore(self.playbook)
        marks = {s: 0.0 for s in active}
        pending: list[Utterance] = []
        for th in threads:
            th.start()

        def emit(events: list[Event]) -> None:
            for ev in events:
                if isinstance(ev, Prompt) and ev.opened:
                    summary.prompts_opened.append(ev)
                if isinstance(ev, TrajectoryState) and ev.speaker is Speaker.CUSTOMER:
                    summary.peak = ev.peak.label
                if isinstance(ev, ScoredUtterance):
                    summary.utterances[ev.utterance.speaker.value] += 1
                self.sink(ev)

        def release(force: bool = False) -> None:
            horizon = min(marks.values()) if marks else float("inf")
            ready = [u for u in pending if force or u.end <= horizon]
            if not ready:
                return
            pending[:] = [u for u in pending if not (force or u.end <= horizon)]
            ready.sort(key=lambda u: (u.end, u.start))
            for item, emb in self.scorer.score(ready):
                emit(core.process(item, emb))

        try:
            while marks and not self._stop.is_set():
                try:
                    item = self._merge.get(timeout=POLL_S)
                except queue.Empty:
                    continue
                if isinstance(item, Utterance):
                    pending.append(item)
                elif isinstance(item, _Watermark):
                    marks[item.speaker] = max(marks[item.speaker], item.t)
                elif isinstance(item, _Done):
                    marks.pop(item.speaker, None)
                elif isinstance(item, Partial):
                    emit([item])
                    continue
                release(force=not marks)
            if not self._stop.is_set():
                release(force=True)
        finally:
            summary.stopped = self._stop.is_set() and not self._errors
            self._stop.set()
            for th in threads:
                th.join(timeout=5.0)
            if not self._errors:
                release(force=True)  # nothing recognised is lost, even on Ctrl-C
                emit(core.finish(duration if not summary.stopped else None))
        summary.wall_s = time.monotonic() - wall0
        if self._errors:
            raise self._errors[0]
        return summary
