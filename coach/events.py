"""The small vocabulary of typed events that flow between the coach's stages.

Every stage (audio source, recognizer, classifier, trajectory, playbook, sinks) takes
and emits these frozen dataclasses and nothing else, so a stage can be tested by
pushing events in and asserting what comes out (the pipecat pattern). Times are
seconds from the start of the call, on the call's own clock, never wall time.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Mapping

import numpy as np


class Speaker(str, enum.Enum):
    """Who is talking. One recognizer per speaker channel; no diarization."""

    AGENT = "agent"
    CUSTOMER = "customer"


class Level(enum.IntEnum):
    """Customer escalation levels, ordered so that comparisons mean 'worse than'."""

    CALM = 0
    FRUSTRATED = 1
    ANGRY = 2
    ABUSIVE = 3
    THREATENING = 4

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, name: str) -> "Level":
        try:
            return cls[name.strip().upper()]
        except KeyError:
            valid = ", ".join(lv.label for lv in cls)
            raise ValueError(f"unknown escalation level {name!r} (expected one of: {valid})") from None


LEVELS: tuple[str, ...] = tuple(lv.label for lv in Level)
SENTIMENTS: tuple[str, ...] = ("negative", "neutral", "positive")


class Trend(str, enum.Enum):
    RISING = "rising"
    STEADY = "steady"
    FALLING = "falling"


@dataclass(frozen=True)
class AudioChunk:
    """A block of mono 16-bit PCM from one speaker's channel.

    ``t`` is the call time of the first sample. ``samples`` is int16 at ``sample_rate``.
    The audio callback creates these and does nothing else.
    """

    speaker: Speaker
    t: float
    samples: np.ndarray
    sample_rate: int

    @property
    def duration(self) -> float:
        return len(self.samples) / float(self.sample_rate)

    def rms_db(self) -> float:
        """Loudness of the chunk in dBFS (-100 for digital silence)."""
        if len(self.samples) == 0:
            return -100.0
        x = self.samples.astype(np.float64) / 32768.0
        rms = float(np.sqrt(np.mean(x * x)))
        return 20.0 * np.log10(rms) if rms > 1e-5 else -100.0


@dataclass(frozen=True)
class Word:
    """One recognised word with its call-time span and recogniser confidence (0..1)."""

    word: str
    start: float
    end: float
    conf: float = 1.0


@dataclass(frozen=True)
class Partial:
    """Words recognised so far in an utterance that is still being spoken."""

    speaker: Speaker
    t: float
    text: str
    arousal: float | None = None  # customer only: voice arousal of the turn so far (0..1)


@dataclass(frozen=True)
class Voice:
    """How an utterance sounded, measured from its audio alone (never from the words).

    Levels are absolute; ``arousal`` (customer only, 0 calm .. 1 very aroused) compares
    them with the speaker's own robust baseline and population norms. No arousal is
    ever computed for the agent: inferring an employee's emotions at work is banned
    (EU AI Act, Art. 5(1)(f)); the agent's voice yields behavioural cues only (pace).
    """

    loudness_db: float                      # RMS of the speech frames, dBFS
    speech_s: float                         # seconds of speech frames in the utterance
    snr_db: float                           # speech level over the channel's noise floor
    pitch_hz: float | None = None           # median F0 of the voiced frames
    pitch_range_st: float | None = None     # F0 spread, 90th - 10th percentile, semitones
    rate_sps: float | None = None           # syllable nuclei per second of speech
    arousal: float | None = None            # customer only


@dataclass(frozen=True)
class Utterance:
    """A finished stretch of speech from one speaker.

    ``confidence`` is the mean word confidence; the playbook refuses severe prompts on
    low-confidence words so that misrecognised audio cannot invent abuse or threats.
    ``loudness_db`` is the speech level in dBFS when audio was available, else None.
    """

    speaker: Speaker
    start: float
    end: float
    text: str
    words: tuple[Word, ...] = ()
    confidence: float = 1.0
    loudness_db: float | None = None
    voice: Voice | None = None

    @property
    def t(self) -> float:
        return self.end


def decide_level(escalation: Mapping[str, float], thresholds: Mapping[str, float] | None = None) -> Level:
    """The model's decision rule: the one place a level is chosen from probabilities.

    With the thresholds a model stores in its ``config.json`` (tuned on a split of its
    training rows): threatening if P(threatening) >= ``thresholds["threatening"]``;
    else abusive if P(abusive or worse) >= ``thresholds["abusive"]``; else the most
    likely of calm, frustrated and angry. A missing threshold falls back to the argmax
    for that level; no thresholds at all is the plain argmax (first wins on ties).
    ``coach.classifier.decide_levels`` is the same rule on arrays.
    """
    p = {lv: float(escalation.get(lv, 0.0) or 0.0) for lv in LEVELS}
    th = thresholds or {}
    if not th:
        return Level.parse(max(LEVELS, key=p.__getitem__))
    t_th, t_ab = th.get("threatening"), th.get("abusive")
    if (p["threatening"] >= float(t_th)) if t_th is not None else max(LEVELS, key=p.__getitem__) == "threatening":
        return Level.THREATENING
    if t_ab is not None:
        if p["abusive"] + p["threatening"] >= float(t_ab):
            return Level.ABUSIVE
    elif max(LEVELS[:4], key=p.__getitem__) == "abusive":
        return Level.ABUSIVE
    return Level.parse(max(LEVELS[:3], key=p.__getitem__))


@dataclass(frozen=True)
class Scores:
    """Classifier output for one utterance: a probability per level and per sentiment.

    ``decided`` is the level the model's decision rule chose (:func:`decide_level` with
    the model's tuned thresholds), set by the classifier and carried through the event
    codec; without it ``level`` is the plain argmax.
    """

    escalation: Mapping[str, float]
    sentiment: Mapping[str, float]
    decided: str | None = None

    @property
    def level(self) -> Level:
        """The level users see: events, timeline, ``coach classify`` and the playbook."""
        if self.decided is not None:
            return Level.parse(self.decided)
        return decide_level(self.escalation)

    def at_least(self, level: Level) -> float:
        """Probability that the utterance is at ``level`` or worse."""
        return float(sum(p for name, p in self.escalation.items() if Level.parse(name) >= level))

    @property
    def valence(self) -> float:
        """Sentiment on -1..+1: P(positive) - P(negative)."""
        return float(self.sentiment.get("positive", 0.0) - self.sentiment.get("negative", 0.0))


@dataclass(frozen=True)
class ScoredUtterance:
    utterance: Utterance
    scores: Scores | None  # None for agent utterances, which are not classified for escalation

    @property
    def t(self) -> float:
        """Call time of the event: when the utterance ended (when the coach could act on it)."""
        return self.utterance.end


@dataclass(frozen=True)
class TrajectoryState:
    """The customer's (or agent's) emotional course at call time ``t``.

    ``escalation`` is the smoothed expected level on the 0..4 scale; ``state`` is the
    level after hysteresis; ``trend`` compares the fast and slow averages.
    """

    speaker: Speaker
    t: float
    escalation: float
    sentiment: float
    state: Level
    trend: Trend
    peak: Level
    words_per_minute: float | None = None
    loudness_rel_db: float | None = None
    risk: float = 0.0  # forecast probability that the customer reaches 'angry' or worse soon
    arousal: float | None = None  # customer: smoothed voice arousal 0..1 (never computed for the agent)
    words_trusted: bool = True  # False: recent words are mostly misrecognised; word-based prompts pause
    word_trust: float | None = None  # share of recent words heard confidently (0..1)
    driver: str = ""  # what moved the customer's state: "words", "voice", "both" or ""


@dataclass(frozen=True)
class Prompt:
    """A coaching cue that opened or closed (Cogito-style open/close events)."""

    prompt: str
    t: float
    opened: bool
    text: str = ""
    priority: int = 0
    severity: str = "info"
    reason: str = ""
    speaker: Speaker = Speaker.AGENT


@dataclass(frozen=True)
class CallEnd:
    """Sentinel that flows through every stage once the call's audio is exhausted."""

    t: float


Event = AudioChunk | Partial | Utterance | ScoredUtterance | TrajectoryState | Prompt | CallEnd


__all__ = [
    "AudioChunk", "CallEnd", "Event", "LEVELS", "Level", "Partial", "Prompt", "SENTIMENTS",
    "ScoredUtterance", "Scores", "Speaker", "TrajectoryState", "Trend", "Utterance", "Voice", "Word",
    "decide_level",
]
