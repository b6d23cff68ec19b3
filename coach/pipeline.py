"""The chain that turns a call into coaching: source -> recognizers -> scoring -> coach.

Threads and bounded queues, one job each (the vosk/pipecat pattern):

* a **source** thread cuts the call into :class:`AudioChunk` s (paced in real time, or
  as fast as the recognizers take them) and does nothing else; the live source will
  be an audio callback doing the same;
* one **recognizer** thread per channel feeds its own recognizer (in a child process
  where the engine holds the GIL, :mod:`coach.workers`) and measures each utterance's
  voice, dropping noise;
* one **coach** thread merges both channels in call-time order (a channel's utterance
  is released only once the other channel's recognizer has caught up to it), ticks the
  call clock at least every ``TICK_S`` of call time, scores customer utterances in
  batches, updates the trajectories and runs the playbook.

Replay and live differ only in the source, so QA sees exactly what an agent would have
seen. The pure parts (:class:`CoachCore`, :class:`Scorer`) are usable on their own.
"""
from __future__ import annotations

import collections
import dataclasses
import enum
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Protocol, Sequence

import numpy as np

from .errors import CoachError
from .events import (CallEnd, Event, Partial, Prompt, ScoredUtterance, Scores, Speaker,
                     TrajectoryState, Utterance)
from .playbook import Playbook, PlaybookConfig
from .trajectory import Trajectory

if TYPE_CHECKING:
    from .sources import AudioSource, UtteranceSource

CHUNK_S = 0.1  # 100 ms chunks: small enough for timely partials, large enough to be cheap
QUEUE_SIZE = 64
TICK_S = 0.5  # the coach's clock ticks at least this often in call time
OVERTALK_GAP_S = 0.3  # a channel heard within this long counts as still talking
DRAIN_S = 0.7  # live stop: how long the recognizers get to finish the turn being spoken
PARTIAL_VOICE_S = 4.0  # a partial's arousal is measured over at most this much of the turn so far
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
    voice: bool = True  # measure each utterance's voice (arousal, pace) and drop noise


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
    """Classifies customer utterances and embeds both sides, a batch at a time.

    A customer turn is classified only when at least ``min_content`` confidently heard
    content words remain (:func:`coach.text.trusted_text`): about 73 % of the words that
    passed the old gate on the real call were stop-words, and the classifier calls such
    fragments angry ("the" 0.59, "say the word" 0.79). Unscored turns still carry their
    voice to the trajectory.

    A classifier that ``uses_context`` (fine-tuned with the previous turn) reads each
    customer turn after the confidently heard words of the turn before it, whoever
    spoke it: a second encoder pass for customer turns only. The paraphrase check
    always uses the plain sentence embedding (``embed``), which for a fine-tuned model
    comes from the encoder before fine-tuning.
    """

    def __init__(self, classifier: TextClassifier, min_word_conf: float = 0.3, min_content: int = 2) -> None:
        self.clf = classifier
        self.min_word_conf = min_word_conf
        self.min_content = min_content
        self.previous = ""  # confident words of the last utterance scored, any speaker

    def score(self, utts: Sequence[Utterance]) -> list[tuple[ScoredUtterance, np.ndarray | None]]:
        from .text import trusted_text
        texts = [(trusted_text(u, self.min_word_conf, self.min_content) or "") if u.speaker is Speaker.CUSTOMER
                 else confident_text(u, self.min_word_conf) for u in utts]
        keep = [i for i, t in enumerate(texts) if t.strip()]
        cust = [i for i in keep if utts[i].speaker is Speaker.CUSTOMER]
        emb: dict[int, np.ndarray] = {}
        scores: dict[int, Scores] = {}
        if keep:
            vecs = self.clf.embed([texts[i] for i in keep])
            emb = {i: vecs[k] for k, i in enumerate(keep)}
        if getattr(self.clf, "uses_context", False):
            before = []  # the turn before each utterance: the batch continues the call
            for i, u in enumerate(utts):
                before.append(self.previous)
                said = confident_text(u, self.min_word_conf) if u.speaker is Speaker.CUSTOMER else texts[i]
                self.previous = said.strip() or self.previous
            if cust:
                scores = dict(zip(cust, self.clf.classify([texts[i] for i in cust],
                                                          contexts=[before[i] for i in cust])))
        elif cust and getattr(self.clf, "scores_embeddings", True):  # one pass serves both jobs
            scores = dict(zip(cust, self.clf.classify_embeddings(np.stack([emb[i] for i in cust]))))
        elif cust:  # fine-tuned without context: the plain embedding is for similarity only
            scores = dict(zip(cust, self.clf.classify([texts[i] for i in cust])))
        return [(ScoredUtterance(u, scores.get(i)), emb.get(i)) for i, u in enumerate(utts)]


class CoachCore:
    """Trajectories and playbook for one call: pure and synchronous, on call time only.

    Time comes in two ways: utterances (their end) and :meth:`tick`, which the pipeline
    calls at least every ``TICK_S`` of call time so that prompts time out, cooldowns end
    and time-based cues fire when due, not at the next utterance (a prompt due to close
    at 43 s used to close at the next utterance, 100 s later).
    """

    def __init__(self, playbook: PlaybookConfig) -> None:
        self.trajectories = {s: Trajectory(s, playbook.trajectory, playbook.min_word_conf) for s in Speaker}
        self.playbook = Playbook(playbook)
        self.t = 0.0

    def process(self, item: ScoredUtterance, embedding: np.ndarray | None = None) -> list[Event]:
        u = item.utterance
        self.t = max(self.t, u.end)
        state = self.trajectories[u.speaker].update(item)
        self.playbook.on_trajectory(state)
        prompts = self.playbook.on_utterance(item, embedding)
        return [item, state, *prompts]

    def partial(self, p: Partial) -> list[Event]:
        """A partial result (live): the event itself, then any early prompt it opens."""
        self.t = max(self.t, p.t)
        return [p, *self.playbook.on_partial_result(p)]

    def tick(self, t: float, last_speech: float | None = None, overtalk_s: float = 0.0) -> list[Event]:
        """Advance call time with no new utterance (``last_speech``, ``overtalk_s``: see Playbook.tick)."""
        if t <= self.t:
            return []
        self.t = t
        return list(self.playbook.tick(t, last_speech, overtalk_s))

    def finish(self, t: float | None = None) -> list[Event]:
        """Close what is open and end the call at ``t`` (the time actually reached)."""
        end = max(self.t, t or 0.0)
        self.t = end
        return [*self.playbook.finish(end), CallEnd(end)]


# ---------------------------------------------------------------- threaded pipeline


@dataclass(frozen=True)
class _Watermark:
    """A recognizer has consumed all audio of its channel up to ``t``; ``active``: when
    that channel last had speech energy (None: not known), for dead air."""

    speaker: Speaker
    t: float
    active: float | None = None
    active_since: float | None = None  # start of that channel's current run of activity


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

    # Observer for benchmarks: called on the recognizer's thread with each final utterance
    # as it leaves the recognizer (the start of the coach's own share of latency).
    on_heard: Callable[[Utterance], None] | None = None

    def __init__(self, *, scorer: Scorer, playbook: PlaybookConfig, sink: Callable[[Event], None],
                 engine=None, options: ReplayOptions = ReplayOptions()) -> None:
        self.engine = engine
        self.scorer = scorer
        self.playbook = playbook
        self.sink = sink
        self.opt = options
        self._stop = threading.Event()
        self._draining = threading.Event()  # live stop: the source is closed, recognizers finish
        self._source = None
        self._errors: list[BaseException] = []
        self._merge: queue.Queue = queue.Queue(maxsize=QUEUE_SIZE * 4)
        self.dropped_noise = {s.value: 0 for s in Speaker}  # utterances the voice gate found to be noise

    def stop(self) -> None:
        """End the run. Live, the first call closes the source so the recognizers finish
        the turn being spoken (it lands in the events file), with a hard stop after
        ``DRAIN_S``; a second call, or any replay, stops at once."""
        src = self._source
        if src is not None and getattr(src, "live", False) and not self._draining.is_set():
            self._draining.set()
            timer = threading.Timer(DRAIN_S, self._stop.set)
            timer.daemon = True
            timer.start()
            try:
                src.close()
            except Exception:  # noqa: BLE001 - a failing device must not block stopping
                self._stop.set()
            return
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

    # -- the one way in

    def run(self, source: "AudioSource | UtteranceSource") -> CallSummary:
        """Run one call from ``source`` (a file, two files, a transcript or a device).

        Every way the run ends (end of input, :meth:`stop` from Ctrl-C or SIGTERM, an
        error in any stage) closes open prompts and emits :class:`CallEnd` at the call
        time actually reached; an error is re-raised after that.
        """
        source.open()
        self._source = source
        if source.kind == "audio":
            if self.engine is None:
                raise CoachError("no speech recognizer is loaded", "open an engine with coach.stt.open_engine()")
            threads, active = self._audio_threads(source)
        else:
            threads, active = self._utterance_threads(source)
        try:
            return self._run(threads, active, source)
        finally:
            source.close()

    def _voice_tracker(self, speaker: Speaker):
        """The channel's voice analyser, or None when voice cues are off."""
        if not self.opt.voice:
            return None
        from .voice import VoiceTracker
        return VoiceTracker(speaker=speaker)

    def _emit_utterance(self, u: Utterance, voice, speaker: Speaker) -> None:
        """Attach how the utterance sounded; drop it when the audio was not speech.

        Line noise and noise bursts (-50 to -65 dBFS) used to become "utterances" such
        as "whoa": the voice gate drops them here, before scoring and before any
        baseline sees them. Arousal is measured for the customer only: the agent's
        voice yields behavioural cues (pace), never an inferred emotion.
        """
        if voice is not None:
            v = voice.measure(u.start, u.end)
            if v is None or not voice.is_speech(v):
                self.dropped_noise[speaker.value] += 1
                return
            if speaker is Speaker.CUSTOMER:
                v = dataclasses.replace(v, arousal=voice.arousal(v))
            voice.observe(v)
            u = dataclasses.replace(u, voice=v, loudness_db=v.loudness_db)
        if self.on_heard is not None:
            self.on_heard(u)
        self._put(self._merge, u)

    def _partial_voice(self, p: Partial, voice) -> Partial:
        """A customer partial with the arousal of the turn so far, so the voice is heard
        before the turn ends (never the agent's: no emotion is inferred on the agent)."""
        if voice is None or p.speaker is not Speaker.CUSTOMER or voice.active_since is None:
            return p
        v = voice.measure(max(voice.active_since, p.t - PARTIAL_VOICE_S), p.t)
        if v is None or not voice.is_speech(v):
            return p
        return dataclasses.replace(p, arousal=voice.arousal(v))

    def _paced(self, source) -> bool:
        return self.opt.speed is Speed.REALTIME and not getattr(source, "live", False)

    def _audio_threads(self, source) -> tuple[list[threading.Thread], set[Speaker]]:
        speakers = tuple(source.speakers)
        queues = {s: queue.Queue(maxsize=QUEUE_SIZE) for s in speakers}
        paced = self._paced(source)

        def feed() -> None:
            t0 = time.monotonic()
            end = 0.0
            for group in source.chunks(self.opt.chunk_s):
                if paced:
                    self._pace(t0, group[0].t)
                for chunk in group:
                    if not self._put(queues[chunk.speaker], chunk):
                        return
                    end = max(end, chunk.t + chunk.duration)
            for s in speakers:
                self._put(queues[s], CallEnd(end))

        def recognize(speaker: Speaker) -> Callable[[], None]:
            def run() -> None:
                rec = self.engine.recognizer(speaker)
                voice = self._voice_tracker(speaker)
                q = queues[speaker]
                try:
                    while not self._stop.is_set():
                        try:
                            item = q.get(timeout=POLL_S)
                        except queue.Empty:
                            continue
                        if isinstance(item, CallEnd):
                            for u in rec.finish():
                                self._emit_utterance(u, voice, speaker)
                            self._put(self._merge, _Watermark(speaker, item.t))
                            self._put(self._merge, _Done(speaker))
                            return
                        if voice is not None:
                            voice.feed(item)
                        for ev in rec.accept(item):
                            if isinstance(ev, Partial):
                                if self.opt.partials:
                                    self._put(self._merge, self._partial_voice(ev, voice))
                            else:
                                self._emit_utterance(ev, voice, speaker)
                        self._put(self._merge, _Watermark(
                            speaker, item.t + item.duration, voice.last_active if voice is not None else None,
                            voice.active_since if voice is not None else None))
                finally:
                    close = getattr(rec, "close", None)
                    if close is not None:
                        close()
            return run

        threads = [threading.Thread(target=self._guard(feed), name="coach-source", daemon=True)]
        threads += [threading.Thread(target=self._guard(recognize(s)), name=f"coach-stt-{s.value}", daemon=True)
                    for s in speakers]
        return threads, set(speakers)

    def _utterance_threads(self, source) -> tuple[list[threading.Thread], set[Speaker]]:
        paced = self._paced(source)

        def feed() -> None:
            t0 = time.monotonic()
            grid = TICK_S
            # A transcript is in memory already; knowing every turn's span lets each
            # watermark say when someone was last talking (a turn ending late can have
            # started long before the turns released ahead of it: not dead air).
            utts = list(source.utterances())
            spans = sorted((u.start, u.end) for u in utts)
            cover = {"i": 0, "until": None}

            def covered(t: float) -> float | None:
                while cover["i"] < len(spans) and spans[cover["i"]][0] <= t:
                    end = spans[cover["i"]][1]
                    cover["until"] = end if cover["until"] is None else max(cover["until"], end)
                    cover["i"] += 1
                return None if cover["until"] is None else min(t, cover["until"])

            def advance(t: float) -> bool:
                # One ordered source: both channels have reached t. In paced replay the
                # watermark moves with the wall clock, so timeouts fire on time there too.
                if paced:
                    self._pace(t0, t)
                active = covered(t)
                return all(self._put(self._merge, _Watermark(s, t, active)) for s in Speaker)

            for u in utts:
                while grid < u.end:
                    if not advance(grid):
                        return
                    grid += TICK_S
                if paced:
                    self._pace(t0, u.end)
                if not self._put(self._merge, u) or not advance(u.end):
                    return
            for s in Speaker:
                self._put(self._merge, _Done(s))

        return [threading.Thread(target=self._guard(feed), name="coach-source", daemon=True)], set(Speaker)

    # -- the coach loop (runs in the caller's thread: one less thread to join)

    def _run(self, threads: list[threading.Thread], active: set[Speaker], source) -> CallSummary:
        wall0 = time.monotonic()
        summary = CallSummary(duration=0.0)
        core = CoachCore(self.playbook)
        marks = {s: 0.0 for s in active}
        pending: list[tuple[float, int, Utterance | Partial]] = []  # (call time, arrival, item)
        seq = 0
        clock = {"next_tick": TICK_S, "reached": 0.0}
        # Voice activity per channel, in call time. A channel may run seconds ahead of the
        # clock, so a tick at g reads only activity at or before g.
        # Entries are (last active, start of that run of activity).
        heard: dict[Speaker, collections.deque] = {s: collections.deque(maxlen=512) for s in Speaker}

        def heard_by(g: float) -> tuple[float | None, float]:
            """(when anyone was last heard, seconds the agent has been talking over the
            customer) as of call time g."""
            now: dict[Speaker, tuple[float, float]] = {}
            for s, dq in heard.items():
                while len(dq) >= 2 and dq[1][0] <= g:
                    dq.popleft()
                if dq and dq[0][0] <= g:
                    now[s] = dq[0]
            last = max((a for a, _ in now.values()), default=None)
            over = 0.0
            a, c = now.get(Speaker.AGENT), now.get(Speaker.CUSTOMER)
            if a and c and g - a[0] <= OVERTALK_GAP_S and g - c[0] <= OVERTALK_GAP_S and a[1] > c[1]:
                over = max(0.0, min(a[0], c[0]) - a[1])
            return last, over

        def emit(events: list[Event]) -> None:
            for ev in events:
                if isinstance(ev, Prompt) and ev.opened:
                    summary.prompts_opened.append(ev)
                if isinstance(ev, TrajectoryState) and ev.speaker is Speaker.CUSTOMER:
                    summary.peak = ev.peak.label
                if isinstance(ev, ScoredUtterance):
                    summary.utterances[ev.utterance.speaker.value] += 1
                self.sink(ev)

        def advance(horizon: float, force: bool = False) -> None:
            """Release, in call order, what every channel has passed; tick the clock between."""
            ready = sorted((x for x in pending if force or x[0] <= horizon), key=lambda x: (x[0], x[1]))
            if ready:
                taken = {id(x) for x in ready}
                pending[:] = [x for x in pending if id(x) not in taken]
            utts = [x[2] for x in ready if isinstance(x[2], Utterance)]
            scored = iter(self.scorer.score(utts)) if utts else iter(())
            for t, _, item in ready:
                tick_to(t)
                if isinstance(item, Partial):
                    emit(core.partial(item))
                else:
                    emit(core.process(*next(scored)))
                clock["reached"] = max(clock["reached"], t)
            if horizon != float("inf"):
                tick_to(horizon)
                clock["reached"] = max(clock["reached"], horizon)

        def tick_to(t: float) -> None:
            while clock["next_tick"] <= t:
                g = clock["next_tick"]
                emit(core.tick(g, *heard_by(g)))
                clock["next_tick"] += TICK_S

        for th in threads:
            th.start()
        try:
            while marks and not self._stop.is_set():
                try:
                    item = self._merge.get(timeout=POLL_S)
                except queue.Empty:
                    continue
                if isinstance(item, (Utterance, Partial)):
                    pending.append((item.end if isinstance(item, Utterance) else item.t, seq, item))
                    seq += 1
                    continue
                if isinstance(item, _Watermark):
                    dq = heard[item.speaker]
                    if item.active is not None and (not dq or item.active > dq[-1][0]):
                        dq.append((item.active, item.active_since if item.active_since is not None else item.active))
                    if item.speaker in marks:
                        marks[item.speaker] = max(marks[item.speaker], item.t)
                elif isinstance(item, _Done):
                    last = marks.pop(item.speaker, 0.0)
                    clock["reached"] = max(clock["reached"], last)
                if marks:
                    advance(min(marks.values()))
        finally:
            summary.stopped = (self._stop.is_set() or self._draining.is_set()) and not self._errors
            self._stop.set()
            deadline = time.monotonic() + 1.0
            for th in threads:
                th.join(timeout=max(0.0, deadline - time.monotonic()))
            # Drain what the recognizers already handed over: nothing recognised is lost.
            while True:
                try:
                    item = self._merge.get_nowait()
                except queue.Empty:
                    break
                if isinstance(item, (Utterance, Partial)):
                    pending.append((item.end if isinstance(item, Utterance) else item.t, seq, item))
                    seq += 1
            try:
                advance(float("inf"), force=True)
            finally:
                if summary.stopped or self._errors:
                    end = max(core.t, clock["reached"])
                else:
                    end = max(core.t, clock["reached"], source.duration or 0.0)
                tick_to(end)
                emit(core.finish(end))
                summary.duration = end
        summary.wall_s = time.monotonic() - wall0
        if self._errors:
            raise self._errors[0]
        return summary
