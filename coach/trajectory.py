"""Per-speaker emotional trajectory: pure, synchronous, time injected by the events.

Why time-aware: utterances arrive irregularly (a ten-second rant, then a two-word
reply), so smoothing decays by call time, not by utterance count. Why hysteresis: one
odd utterance (or one misrecognised one) must not flip the state the playbook acts on.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from .events import Level, ScoredUtterance, Speaker, TrajectoryState, Trend, Utterance


@dataclass(frozen=True)
class TrajectoryOptions:
    """Smoothing and hysteresis settings (the ``trajectory:`` block of playbook.yaml)."""

    half_life_s: float = 20.0  # slow average: the customer's mood over the last minute or so
    fast_half_life_s: float = 6.0  # fast average: the last turn or two
    prior_weight: float = 0.6  # how many calm utterances the customer starts with
    enter_p: float = 0.55  # level L is entered when the smoothed P(level >= L) reaches this
    exit_p: float = 0.35  # and left when it drops below this
    trend_margin: float = 0.2  # fast - slow beyond this is a rising/falling trend
    min_confidence_weight: float = 0.2  # a near-zero-confidence utterance still counts a little
    wpm_window_s: float = 30.0  # speaking rate over the speaker's last half minute of speech
    wpm_min_words: int = 6
    loudness_baseline_utterances: int = 3


def _decay(dt: float, half_life: float) -> float:
    return math.exp(-math.log(2.0) * max(dt, 0.0) / half_life)


class _Average:
    """Exponentially time-decayed weighted mean (scalar or vector) with a calm prior."""

    def __init__(self, half_life: float, prior_weight: float, prior: float | np.ndarray = 0.0) -> None:
        self.half_life = half_life
        self.num = np.asarray(prior, dtype=np.float64) * prior_weight
        self.den = prior_weight
        self.t: float | None = None

    def add(self, t: float, x: float | np.ndarray, w: float) -> np.ndarray:
        if self.t is not None:
            k = _decay(t - self.t, self.half_life)
            self.num = self.num * k
            self.den *= k
        self.t = t if self.t is None else max(self.t, t)
        self.num = self.num + w * np.asarray(x, dtype=np.float64)
        self.den += w
        return self.value

    @property
    def value(self) -> np.ndarray:
        return self.num / self.den if self.den > 1e-9 else self.num * 0.0


def speaking_rate(utterances: "deque[Utterance]", now: float, window_s: float, min_words: int) -> float | None:
    """Words per minute over the speech (not the silences) of the recent utterances."""
    words = 0
    seconds = 0.0
    for u in utterances:
        if u.end < now - window_s:
            continue
        if u.words:
            n = len(u.words)
            span = u.words[-1].end - u.words[0].start
        else:
            n = len(u.text.split())
            span = u.end - u.start
        if n == 0 or span <= 0:
            continue
        words += n
        seconds += span
    if words < min_words or seconds <= 0:
        return None
    return 60.0 * words / seconds


class Trajectory:
    """Follows one speaker. Feed it that speaker's scored utterances in call order."""

    def __init__(self, speaker: Speaker, options: TrajectoryOptions = TrajectoryOptions()) -> None:
        self.speaker = speaker
        self.opt = options
        # Smoothed cumulative probabilities P(level >= L) for L = frustrated..threatening:
        # the state is their median level, which ignores a classifier's diffuse tails.
        zeros = np.zeros(len(Level) - 1)
        self.slow = _Average(options.half_life_s, options.prior_weight, zeros)
        self.fast = _Average(options.fast_half_life_s, options.prior_weight, zeros)
        self.sent = _Average(options.half_life_s, options.prior_weight)
        self.state = Level.CALM
        self.peak = Level.CALM
        self.recent: deque[Utterance] = deque(maxlen=32)
        self.loudness: list[float] = []
        self.last: TrajectoryState | None = None

    def _hysteresis(self, fast: np.ndarray, slow: np.ndarray) -> Level:
        """Enter on the blend of fast and slow averages, leave only when both have dropped."""
        up, down = (fast + slow) / 2.0, np.maximum(fast, slow)
        state = int(self.state)
        while state < int(Level.THREATENING) and up[state] >= self.opt.enter_p:
            state += 1
        while state > int(Level.CALM) and down[state - 1] < self.opt.exit_p:
            state -= 1
        return Level(state)

    def update(self, item: ScoredUtterance) -> TrajectoryState:
        """Fold one utterance in and return the new state (also kept as ``last``)."""
        u = item.utterance
        t = u.end
        self.recent.append(u)
        wpm = speaking_rate(self.recent, t, self.opt.wpm_window_s, self.opt.wpm_min_words)
        rel_db = None
        if u.loudness_db is not None and u.loudness_db > -90:
            if len(self.loudness) < self.opt.loudness_baseline_utterances:
                self.loudness.append(u.loudness_db)
            baseline = sorted(self.loudness)[len(self.loudness) // 2]
            rel_db = u.loudness_db - baseline
        if item.scores is not None:
            # Confidence and length both weigh an utterance: a long, clearly heard rant
            # should move the average more than a misheard two-word fragment.
            dur = max(u.end - u.start, 0.5)
            w = max(u.confidence, self.opt.min_confidence_weight) * min(1.0, 0.4 + dur / 5.0)
            cum = np.array([item.scores.at_least(lv) for lv in list(Level)[1:]])
            slow = self.slow.add(t, cum, w)
            fast = self.fast.add(t, cum, w)
            self.sent.add(t, item.scores.valence, w)
            self.state = self._hysteresis(fast, slow)
            self.peak = max(self.peak, self.state)
        fast_e, slow_e = float(self.fast.value.sum()), float(self.slow.value.sum())  # expected level
        diff = fast_e - slow_e
        trend = Trend.RISING if diff > self.opt.trend_margin else Trend.FALLING if diff < -self.opt.trend_margin else Trend.STEADY
        self.last = TrajectoryState(
            speaker=self.speaker,
            t=t,
            escalation=fast_e,
            sentiment=float(self.sent.value),
            state=self.state,
            trend=trend,
            peak=self.peak,
            words_per_minute=wpm,
            loudness_rel_db=rel_db,
            risk=self._risk(fast_e, slow_e, rel_db),
        )
        return self.last

    def _risk(self, fast_e: float, slow_e: float, rel_db: float | None) -> float:
        """Heuristic forecast that the customer reaches 'angry' or worse within a few turns.

        A logistic blend of the fast level, its slope and loudness above baseline; a
        learned forecaster (trained on dialogue order) can replace it behind the same field.
        """
        z = 2.2 * (fast_e - 1.3) + 2.0 * (fast_e - slow_e) - 0.8 * float(self.sent.value)
        if rel_db is not None:
            z += 0.15 * max(min(rel_db, 10.0), -5.0)
        return 1.0 / (1.0 + math.exp(-z))
