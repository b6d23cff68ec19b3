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
    prior_weight: float = 0.4  # how many calm utterances the customer starts with
    enter_p: float = 0.45  # level L is entered when the smoothed P(level >= L) reaches this
    exit_p: float = 0.35  # and left when it drops below this
    trend_margin: float = 0.2  # fast - slow beyond this is a rising/falling trend
    min_confidence_weight: float = 0.2  # a near-zero-confidence utterance still counts a little
    wpm_window_s: float = 30.0  # speaking rate over the speaker's last half minute of speech
    wpm_min_words: int = 6
    loudness_baseline_utterances: int = 8  # robust median over this many recent speech-gated turns
    voice_weight: float = 1.2  # weight of voice arousal relative to fully trusted words
    voice_ceiling: float = 0.5  # what voice alone may say about P(frustrated or worse)
    trust_window_s: float = 45.0  # word trust over the speaker's recent speech
    min_word_trust: float = 0.35  # below this share of confident words, the transcript is unreliable
    trust_min_words: int = 8  # until this many words were heard, the words are given the benefit


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

    def __init__(self, speaker: Speaker, options: TrajectoryOptions = TrajectoryOptions(),
                 min_word_conf: float = 0.5) -> None:
        self.speaker = speaker
        self.opt = options
        self.min_word_conf = min_word_conf
        self.arousal = _Average(options.fast_half_life_s, 0.0)
        self.heard: deque[tuple[float, int, int]] = deque(maxlen=256)  # (t, words, confident words)
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
        self._pace: deque[tuple[float, float, float]] = deque(maxlen=64)
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

    def word_trust(self, t: float) -> tuple[float | None, bool]:
        """Share of this speaker's recent words heard confidently, and whether to trust words.

        Until ``trust_min_words`` words were heard the words get the benefit of the doubt:
        a call must not start in the 'unreliable' state on its first two words.
        """
        recent = [(n, k) for tt, n, k in self.heard if tt >= t - self.opt.trust_window_s]
        words = sum(n for n, _ in recent)
        if words == 0:
            return None, True
        share = sum(k for _, k in recent) / words
        return share, words < self.opt.trust_min_words or share >= self.opt.min_word_trust

    def update(self, item: ScoredUtterance) -> TrajectoryState:
        """Fold one utterance in and return the new state (also kept as ``last``).

        Evidence from the words and from the voice is weighed by how far the words can be
        trusted: an utterance whose words were confidently heard moves the state by its
        text scores; one whose words failed (8 kHz phone audio through the offline engine
        is mostly misrecognised) moves it by the customer's voice arousal instead. Voice
        alone speaks only to "frustrated or worse": anger, abuse and threats need words.
        """
        u = item.utterance
        t = u.end
        self.recent.append(u)
        n_words = len(u.words) if u.words else len(u.text.split())
        confident = sum(1 for w in u.words if w.conf >= self.min_word_conf) if u.words else n_words
        self.heard.append((t, n_words, confident))
        share, trusted = self.word_trust(t)
        voice = u.voice
        if voice is not None and voice.rate_sps is not None and self.speaker is Speaker.AGENT:
            from .voice import words_per_minute
            # Words spoken (from syllable nuclei) over the turn's elapsed time, like the
            # word-count pace it replaces: pauses inside a turn count, silences between do not.
            wpm = self._audio_wpm(t, words_per_minute(voice.rate_sps) * voice.speech_s / 60.0,
                                  max(u.end - u.start, voice.speech_s))
        else:
            wpm = speaking_rate(self.recent, t, self.opt.wpm_window_s, self.opt.wpm_min_words)
        rel_db = None
        level_db = voice.loudness_db if voice is not None else u.loudness_db
        if level_db is not None and level_db > -90:
            if self.loudness:
                rel_db = level_db - float(np.median(self.loudness))
            self.loudness.append(level_db)
            del self.loudness[:-self.opt.loudness_baseline_utterances]
        dur = max(u.end - u.start, 0.5)
        length = min(1.0, 0.4 + dur / 5.0)
        cum, w, driver = None, 0.0, "words"  # this utterance's evidence: P(level >= L), its weight
        if item.scores is not None:
            # Confidence and length both weigh an utterance: a long, clearly heard rant
            # should move the average more than a misheard two-word fragment. While this
            # speaker's transcript is unreliable, the words that did pass the gate are
            # likely misheard too: they count a quarter as much.
            trust = max(u.confidence, self.opt.min_confidence_weight)
            w = trust * length * (1.0 if trusted else 0.25)
            cum = np.array([item.scores.at_least(lv) for lv in list(Level)[1:]])
            self.sent.add(t, item.scores.valence, w)
        arousal = voice.arousal if voice is not None and self.speaker is Speaker.CUSTOMER else None
        if arousal is not None:
            self.arousal.add(t, arousal, 1.0)
            # Arousal is not anger (laughter and excitement are aroused too): on its own
            # the voice says at most ``voice_ceiling`` about "frustrated or worse". It
            # never dilutes words that were heard: an aroused voice can only strengthen
            # them; when the words failed, the voice is the evidence.
            v_f = self.opt.voice_ceiling * float(arousal)
            if cum is not None:
                # Upset words in an aroused voice: two independent signals agree, so the
                # (possibly half-heard) words count for more.
                w += self.opt.voice_weight * length * float(arousal) * float(cum[0])
                if v_f >= cum[0]:
                    cum, driver = cum.copy(), "both"
                    cum[0] = v_f
            else:
                cum, w, driver = np.array([v_f, 0.0, 0.0, 0.0]), self.opt.voice_weight * length, "voice"
        if cum is not None and w > 0:
            slow = self.slow.add(t, cum, w)
            fast = self.fast.add(t, cum, w)
            self.state = self._hysteresis(fast, slow)
            self.peak = max(self.peak, self.state)
        if cum is None or self.state == Level.CALM:
            driver = ""  # which evidence carries a raised state: words, voice, or both
        fast_e, slow_e = float(self.fast.value.sum()), float(self.slow.value.sum())  # expected level
        diff = fast_e - slow_e
        trend = Trend.RISING if diff > self.opt.trend_margin else Trend.FALLING if diff < -self.opt.trend_margin else Trend.STEADY
        smoothed = float(self.arousal.value) if self.arousal.den > 1e-9 else None
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
            arousal=smoothed if self.speaker is Speaker.CUSTOMER else None,
            words_trusted=trusted,
            word_trust=share,
            driver=driver,
        )
        return self.last

    def _audio_wpm(self, t: float, words: float, seconds: float) -> float | None:
        """Agent pace over the recent turns: estimated words per minute of talking."""
        self._pace.append((t, words, seconds))
        recent = [(w, s) for tt, w, s in self._pace if tt >= t - self.opt.wpm_window_s]
        total = sum(s for _, s in recent)
        if total < 2.0:
            return None
        return 60.0 * sum(w for w, _ in recent) / total

    def _risk(self, fast_e: float, slow_e: float, rel_db: float | None) -> float:
        """Heuristic forecast that the customer reaches 'angry' or worse within a few turns.

        A logistic blend of the fast level, its slope and loudness above baseline; a
        learned forecaster (trained on dialogue order) can replace it behind the same field.
        """
        z = 2.2 * (fast_e - 1.3) + 2.0 * (fast_e - slow_e) - 0.8 * float(self.sent.value)
        if rel_db is not None:
            z += 0.15 * max(min(rel_db, 10.0), -5.0)
        return 1.0 / (1.0 + math.exp(-z))
