"""How the caller sounds: loudness, pitch, pitch range and speaking rate, from audio alone.

Why: real 8 kHz phone audio through the offline recognizer is mostly misrecognised,
so the coach must hear the customer's voice when the words fail. On the acted
emotional-speech set (through the phone path) angry clips are 7-12 dB louder than
neutral ones by the same speaker, 51-74 Hz higher and 2.7-6.3x wider in pitch range;
:meth:`VoiceTracker.arousal` turns that into a 0..1 score (held-out AUC 1.00).

**Arousal is computed for the customer only.** Inferring an employee's emotions at
work is banned (EU AI Act, Art. 5(1)(f)); never call :meth:`VoiceTracker.arousal` on
the agent's channel (a tracker made with ``speaker=Speaker.AGENT`` refuses, and keeps
nothing of the agent's voice but its level). For the agent only a behavioural cue is
derived: pace, :func:`words_per_minute` from syllable nuclei, not from recognised words.

* :func:`measure` (pure) turns one stretch of int16 audio into a :class:`~coach.events.Voice`.
  Every input is first brought to 8 kHz and band-limited to 300-3400 Hz, so 8 kHz phone
  audio and the pipeline's 16 kHz copy of it give the same figures.
* :class:`VoiceTracker` (one per speaker channel, used from that channel's recognizer
  thread only) keeps the last ``buffer_s`` of audio in a fixed ring buffer and a running
  noise floor, measures utterance spans, gates out line noise, noise bursts, tones and
  the other side's leak (:meth:`~VoiceTracker.is_speech`), and scores customer arousal
  against the caller's own robust baseline blended with population norms.
* The calibration (logistic weights, population norms, gate thresholds, syllables per
  word) ships in ``coach/configs/voice.yaml``, refitted and evidenced by
  ``scripts/calibrate_arousal.py``; it is loaded on first use, never at import.

Only numpy and scipy are used (no GPL or non-commercial toolkits).
"""
from __future__ import annotations

import functools
import math
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
from scipy.ndimage import maximum_filter1d
from scipy.signal import butter, find_peaks, resample_poly, sosfilt, sosfiltfilt

from .errors import ConfigError
from .events import AudioChunk, Speaker, Voice

CONFIG = "configs/voice.yaml"
FEATURES: tuple[str, ...] = ("loudness", "pitch", "range", "rate")

# ----------------------------------------------------------------------------- analysis constants

ANALYSIS_RATE = 8000          # everything is analysed as telephone audio
BAND_HZ = (300.0, 3400.0)     # the telephone band: 16 kHz copies of 8 kHz calls hold nothing above 4 kHz
FRAME_S = 0.030               # 30 ms frames: two periods of a 60 Hz voice...
HOP_S = 0.010                 # ...every 10 ms
F0_MIN_HZ = 60.0
F0_MAX_HZ = 500.0
DIGITAL_SILENCE_DB = -90.0    # frames below this are gated/zeroed line, not noise: never a noise floor

# Speech frames: above the noise floor by SPEECH_MARGIN_DB, above ABS_FLOOR_DB and within
# DYNAMIC_DB of the stretch's loudest frame. On the real call the floor is -75..-60 dBFS
# and speech frames -35..-10 dBFS: 6 dB over the floor keeps the weak ends of words; the
# absolute floor stops a near-silent (or digitally gated) line's faint hiss from counting;
# 35 dB under the loudest frame is below any speech sound of the same talker.
SPEECH_MARGIN_DB = 6.0
ABS_FLOOR_DB = -60.0
DYNAMIC_DB = 35.0
# Speaking time bridges the quiet frames inside words and between close words (stop
# closures, weak fricatives): only gaps of PAUSE_S or more are pauses (de Jong & Wempe's
# 0.3 s), so rate_sps is an articulation rate and words_per_minute a pace while talking.
PAUSE_S = 0.3
# Without a tracker's floor, a stretch that never falls quiet (a steady tone, a clip cut
# inside speech) still has its own low percentile as the floor, but never closer than
# this to its loud end: speech frames span >= 25 dB within any second of talk.
MIN_OWN_SPREAD_DB = 20.0

# YIN (de Cheveigne & Kawahara 2002) on the band-limited signal: the fundamental of a
# male voice lies below 300 Hz and is absent, but the period is still there in the
# harmonics. A dip below 0.3 of the cumulative-mean-normalised difference counts as
# voiced: through the phone path the female vowels of the emotional-speech set dip to
# 0.01-0.15, the male read-speech vowels to 0.05-0.3 (0.25 left "ten of clubs" 6 voiced
# frames and a 0.08 st range), unvoiced and noise frames stay at 0.4-0.9.
YIN_THRESHOLD = 0.3
# Period choice: the shortest-lag dip within YIN_TOLERANCE of the deepest one (a 220 Hz
# tone at 8 kHz dips 0.043 at its 36-sample lag but 0.003 at 3 periods, 109 samples: the
# integer lag misses 36.36), then one octave down when the dips at odd multiples of that
# lag are OCTAVE_RATIO x and OCTAVE_MARGIN shallower than at even ones (the sad clips of
# a 186 Hz speaker dip 0.04-0.15 at 18-19 samples, 0.004-0.02 at 37-38: their 2nd
# harmonic dominates once the phone band removed the fundamental).
YIN_TOLERANCE = 0.05
OCTAVE_RATIO = 1.5
OCTAVE_MARGIN = 0.01
MIN_VOICED_RUN = 3            # 30 ms: shorter voiced blips are noise, not phonation
MIN_VOICED_FRAMES = 10        # fewer than 100 ms voiced in a stretch: no pitch at all

# Syllable nuclei, after de Jong & Wempe (2009): peaks of the band-limited level smoothed
# over 5 frames (~70 ms, their 64 ms intensity window) that stand NUCLEUS_DIP_DB above the
# dips around them, lie >= 80 ms apart, are periodic (YIN dip < 0.6 within +-10 ms: noise
# never dips below 0.7) and come within NUCLEUS_BELOW_REF_DB of the loudest frame within
# +-2 s. Chosen on read_speech (two men) and the emotional-speech clips (two women)
# through the phone path, for a count that follows WORDS the same way for both voices:
# * their -25 dB and a strict voicing check (0.35) counted 0.7-0.8 nuclei per syllable
#   for the men but 1.04 for the women (a man's vowels dip less on a phone line): women
#   would read ~30 % faster for the same words;
# * without a voicing check all syllables count (0.92-1.05 per syllable, either voice),
#   but syllables per word differ by text (digits 1.1, prose 1.4): 20-34 % errors across
#   the two read_speech folders;
# * 15 dB under the local peak drops the reduced, unstressed syllables: 1.07 nuclei per
#   word on cards, 1.12 on librivox, 1.00 on the emotional clips. A +-2 s reference
#   (not the whole stretch, as theirs) keeps quieter phrases of a long turn counted.
NUCLEUS_SMOOTH_FRAMES = 5
NUCLEUS_DIP_DB = 4.0
NUCLEUS_MIN_GAP_S = 0.08
NUCLEUS_BELOW_REF_DB = 15.0
NUCLEUS_REF_S = 2.0
NUCLEUS_VOICING = 0.6
NUCLEUS_VOICING_FRAMES = 1


# ----------------------------------------------------------------------------- DSP helpers


@functools.lru_cache(maxsize=8)
def _bandpass(rate: int, lo: float, hi: float) -> np.ndarray:
    hi = min(hi, 0.45 * rate)
    return butter(4, [lo, hi], btype="bandpass", fs=rate, output="sos")


def _to_analysis_rate(x: np.ndarray, rate: int) -> np.ndarray:
    if rate == ANALYSIS_RATE:
        return x
    g = math.gcd(int(rate), ANALYSIS_RATE)
    return resample_poly(x, ANALYSIS_RATE // g, int(rate) // g)


def _frames(x: np.ndarray, size: int, hop: int) -> np.ndarray:
    """(n, size) view of frames every ``hop`` samples (the last frame zero-padded)."""
    n = max(1, 1 + int(math.ceil(max(0, len(x) - size) / hop)))
    need = (n - 1) * hop + size
    if len(x) < need:
        x = np.concatenate([x, np.zeros(need - len(x))])
    return np.lib.stride_tricks.sliding_window_view(x, size)[::hop][:n]


def _db(power: np.ndarray | float) -> np.ndarray:
    return 10.0 * np.log10(np.maximum(power, 1e-12))


def _yin(x: np.ndarray, starts: np.ndarray, frame: int, rate: int) -> tuple[np.ndarray, np.ndarray]:
    """YIN F0 (Hz, 0 = unvoiced) and the normalised difference function of the frames at ``starts``.

    Each frame integrates over ``frame`` samples and sees ``tau_max`` samples beyond
    (zero-padded at the end). Plain YIN takes the first dip under the threshold, which
    on band-limited audio (no fundamental below 300 Hz, the 2nd harmonic strongest) read
    the sad clips of a 186 Hz speaker at 380-430 Hz; the deepest dip alone falls on a
    multiple of the period. See YIN_TOLERANCE and OCTAVE_RATIO for the rule used.
    """
    n_frames = len(starts)
    tau_min = int(math.floor(rate / F0_MAX_HZ))
    tau_max = int(math.ceil(rate / F0_MIN_HZ))
    seg = frame + tau_max + 1
    if n_frames == 0:
        return np.zeros(0), np.ones((0, tau_max + 1))
    need = int(starts[-1]) + seg
    xp = np.concatenate([x, np.zeros(max(0, need - len(x)))])
    segs = xp[starts[:, None] + np.arange(seg)[None, :]]
    nfft = 1 << int(math.ceil(math.log2(seg + frame)))
    a = np.fft.rfft(segs[:, :frame], nfft)
    b = np.fft.rfft(segs, nfft)
    r = np.fft.irfft(np.conj(a) * b, nfft)[:, : tau_max + 1]            # r(tau) = sum_j x[j] x[j+tau]
    cs = np.concatenate([np.zeros((n_frames, 1)), np.cumsum(segs * segs, axis=1)], axis=1)
    taus = np.arange(tau_max + 1)
    d = np.maximum(cs[:, frame][:, None] + cs[:, taus + frame] - cs[:, taus] - 2.0 * r, 0.0)
    d[:, 0] = 0.0
    dn = np.ones_like(d)
    dn[:, 1:] = d[:, 1:] * taus[1:] / np.maximum(np.cumsum(d[:, 1:], axis=1), 1e-20)
    w = dn[:, tau_min - 1: tau_max + 2]                 # one lag of context each side
    mid = w[:, 1:-1]
    local_min = (mid <= w[:, :-2]) & (mid <= w[:, 2:])
    gmin = np.where(local_min, mid, np.inf).min(axis=1)
    cand = local_min & (mid <= gmin[:, None] + YIN_TOLERANCE) & (mid < YIN_THRESHOLD)
    ok = cand.any(axis=1)
    k = np.argmax(cand, axis=1) + tau_min               # first candidate lag
    rows = np.arange(n_frames)

    # Octave-down check: if the dips at odd multiples of k are clearly shallower than at
    # even ones, the signal repeats every 2k (odd harmonics of the lower pitch present).
    m = np.arange(1, 9)
    lags = np.rint(k[:, None] * m[None, :]).astype(int)
    inside = lags < tau_max
    lc = np.clip(lags, 1, tau_max - 1)
    near = np.minimum(np.minimum(dn[rows[:, None], lc - 1], dn[rows[:, None], lc]), dn[rows[:, None], lc + 1])
    odd = inside & (m % 2 == 1)[None, :]
    even = inside & (m % 2 == 0)[None, :]
    odd_mean = np.where(odd, near, 0.0).sum(axis=1) / np.maximum(odd.sum(axis=1), 1)
    even_mean = np.where(even, near, 0.0).sum(axis=1) / np.maximum(even.sum(axis=1), 1)
    down = ok & even.any(axis=1) & (odd_mean >= OCTAVE_RATIO * even_mean) & (odd_mean - even_mean >= OCTAVE_MARGIN)
    if down.any():
        r = rows[down]
        c2 = np.clip(2 * k[down], tau_min + 1, tau_max - 1)
        three = np.stack([dn[r, c2 - 1], dn[r, c2], dn[r, c2 + 1]], axis=1)
        k[down] = c2 - 1 + np.argmin(three, axis=1)

    y0, y1, y2 = dn[rows, k - 1], dn[rows, k], dn[rows, np.minimum(k + 1, tau_max)]
    den = y0 - 2.0 * y1 + y2
    shift = np.where(den > 1e-12, 0.5 * (y0 - y2) / np.where(den > 1e-12, den, 1.0), 0.0)
    f0 = np.where(ok, rate / (k + np.clip(shift, -0.5, 0.5)), 0.0)
    return f0, dn


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) of the runs of True in ``mask``."""
    if not mask.any():
        return []
    m = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(m))
    return list(zip(edges[0::2], edges[1::2]))


@dataclass(frozen=True)
class Analysis:
    """Frame-level results behind one :class:`Voice` (for tests, tuning and the bench)."""

    energy_db: np.ndarray        # band-limited frame level, dBFS (30 ms frames, 10 ms hop)
    speech: np.ndarray           # bool per frame
    f0_hz: np.ndarray            # per frame, 0 where unvoiced
    nuclei: np.ndarray           # frame indices of syllable nuclei
    floor_db: float              # noise floor used
    voice: Voice | None


def analyse(samples: np.ndarray, sample_rate: int, noise_floor_db: float | None = None) -> Analysis:
    """:func:`measure` with its frame-level workings kept (see there)."""
    x = np.asarray(samples, dtype=np.float64).ravel() / 32768.0
    empty = Analysis(np.zeros(0), np.zeros(0, bool), np.zeros(0), np.zeros(0, int), -100.0, None)
    if sample_rate <= 0 or len(x) < int(sample_rate * FRAME_S):
        return empty
    x = _to_analysis_rate(x, int(sample_rate))
    rate = ANALYSIS_RATE
    y = sosfiltfilt(_bandpass(rate, *BAND_HZ), x)
    frame, hop = int(FRAME_S * rate), int(HOP_S * rate)
    fr = _frames(y, frame, hop)
    n = len(fr)
    energy = _db(np.mean(fr * fr, axis=1))
    live = energy > DIGITAL_SILENCE_DB
    if not live.any():
        return Analysis(energy, np.zeros(n, bool), np.zeros(n), np.zeros(0, int), -100.0, None)
    peak = float(np.percentile(energy[live], 99))
    if noise_floor_db is None:
        floor = float(min(np.percentile(energy[live], 10), np.percentile(energy[live], 95) - MIN_OWN_SPREAD_DB))
    else:
        floor = float(noise_floor_db)
    thr = max(floor + SPEECH_MARGIN_DB, ABS_FLOOR_DB, peak - DYNAMIC_DB)
    speech = energy > thr
    if not speech.any():
        return Analysis(energy, speech, np.zeros(n), np.zeros(0, int), floor, None)
    loud = float(_db(np.mean(np.mean(fr[speech] ** 2, axis=1))))
    talking = speech.copy()
    runs = _runs(speech)
    for (_, b), (a, _) in zip(runs, runs[1:]):
        if (a - b) * HOP_S < PAUSE_S:
            talking[b:a] = True
    speech_s = float(talking.sum()) * HOP_S

    # --- pitch
    f0 = np.zeros(n)
    dn = np.ones((n, int(math.ceil(rate / F0_MIN_HZ)) + 1))
    idx = np.flatnonzero(speech)
    f0[idx], dn[idx] = _yin(y, idx * hop, frame, rate)
    aperiodicity = dn[:, int(math.floor(rate / F0_MAX_HZ)):].min(axis=1)
    voiced = f0 > 0
    for a, b in _runs(voiced):
        if b - a < MIN_VOICED_RUN:
            voiced[a:b] = False
    f0 = np.where(voiced, f0, 0.0)
    pitch_hz = pitch_range = None
    if voiced.sum() >= MIN_VOICED_FRAMES:
        f0 = _octave_guard(f0, voiced, dn, rate)
        voiced = f0 > 0
    if voiced.sum() >= MIN_VOICED_FRAMES:
        v = f0[voiced]
        pitch_hz = float(np.median(v))
        p10, p90 = np.percentile(v, [10, 90])
        pitch_range = float(12.0 * np.log2(p90 / p10))
    else:
        voiced[:] = False
        f0[:] = 0.0

    # --- syllable nuclei
    nuclei = _nuclei(energy, speech, aperiodicity)
    rate_sps = float(len(nuclei)) / speech_s if speech_s > 0 and pitch_hz is not None else None
    voice = Voice(loudness_db=round(loud, 2), speech_s=round(speech_s, 3), snr_db=round(loud - floor, 2),
                  pitch_hz=None if pitch_hz is None else round(pitch_hz, 2),
                  pitch_range_st=None if pitch_range is None else round(pitch_range, 3),
                  rate_sps=None if rate_sps is None else round(rate_sps, 3))
    return Analysis(energy, speech, f0, nuclei, floor, voice)


def _octave_guard(f0: np.ndarray, voiced: np.ndarray, dn: np.ndarray, rate: int) -> np.ndarray:
    """Re-pick frames far from the stretch's median F0 where the period agrees with it.

    Without the fundamental (below 300 Hz on a phone line) YIN sometimes locks onto 2/3
    or 1/2 of the true period: the real call's 100 Hz caller read 148-159 Hz in places,
    which alone made his pitch range 8 st. A frame more than 25 % off the median is moved
    to the dip nearest the median's period (within +-15 %) when the difference function
    dips below the voicing threshold there; a frame that cannot be moved is kept if it is
    within 0.6-1.65x of the median (a real pitch excursion has no dip at the median's
    period) and dropped beyond that (an unconfirmed octave jump).
    """
    out = f0.copy()
    med = float(np.median(f0[voiced]))
    tau_min = int(math.floor(rate / F0_MAX_HZ))
    tau_max = dn.shape[1] - 1
    t_med = rate / med
    lo = max(tau_min, int(math.floor(t_med * 0.85)))
    hi = min(tau_max - 1, int(math.ceil(t_med * 1.15)))
    for i in np.flatnonzero(voiced):
        ratio = f0[i] / med
        if 0.8 <= ratio <= 1.25:
            continue
        if hi > lo:
            k = lo + int(np.argmin(dn[i, lo: hi + 1]))
            if dn[i, k] < YIN_THRESHOLD and lo < k < hi:
                y0, y1, y2 = dn[i, k - 1], dn[i, k], dn[i, k + 1]
                den = y0 - 2.0 * y1 + y2
                shift = float(np.clip(0.5 * (y0 - y2) / den, -0.5, 0.5)) if den > 1e-12 else 0.0
                out[i] = rate / (k + shift)
                continue
        if not (0.6 < ratio < 1.65):
            out[i] = 0.0
    return out


def _nuclei(energy_db: np.ndarray, speech: np.ndarray, aperiodicity: np.ndarray) -> np.ndarray:
    """Frame indices of syllable nuclei: prominent, periodic, near-peak maxima of the level."""
    if not speech.any():
        return np.zeros(0, int)
    k = NUCLEUS_SMOOTH_FRAMES
    env = _db(np.convolve(10.0 ** (energy_db / 10.0), np.ones(k) / k, mode="same"))
    ref = maximum_filter1d(np.where(speech, env, -300.0), size=2 * int(round(NUCLEUS_REF_S / HOP_S)) + 1,
                           mode="nearest")
    peaks, _ = find_peaks(env, prominence=NUCLEUS_DIP_DB, distance=max(1, int(round(NUCLEUS_MIN_GAP_S / HOP_S))))
    w = 2 * NUCLEUS_VOICING_FRAMES + 1
    periodic = np.convolve((aperiodicity < NUCLEUS_VOICING).astype(float), np.ones(w), mode="same") > 0
    keep = [p for p in peaks if speech[p] and periodic[p] and env[p] >= ref[p] - NUCLEUS_BELOW_REF_DB]
    return np.asarray(keep, dtype=int)


def measure(samples_int16: np.ndarray, sample_rate: int, noise_floor_db: float | None = None) -> Voice | None:
    """How a stretch of one speaker's audio sounded, or None when it holds no speech frame.

    30 ms frames every 10 ms of the 8 kHz, 300-3400 Hz band-limited signal (any input
    rate). Speech frames are those above ``noise_floor_db`` + 6 dB (the tracker's running
    floor; when None, the stretch's own 10th-percentile level, at most 20 dB under its
    95th), above -60 dBFS and within 35 dB of the loudest frame. ``loudness_db`` is their
    RMS level (band-limited, dBFS), ``snr_db`` that level over the floor, ``speech_s`` the
    speaking time (speech frames, gaps under 0.3 s bridged), ``pitch_hz`` the median YIN
    F0 of the voiced speech frames (None under 100 ms voiced), ``pitch_range_st``
    12*log2(p90/p10) of that F0, ``rate_sps`` syllable nuclei per second of speaking
    time. ``arousal`` is left None. Pure: no state, no I/O.
    """
    return analyse(samples_int16, sample_rate, noise_floor_db).voice


# ----------------------------------------------------------------------------- calibration


@dataclass(frozen=True)
class Gate:
    """What an utterance needs to count as speech (see :func:`is_speech`).

    Measured on the real contact-centre call (8 kHz, through the tracker): its speech is
    -24..-13 dBFS and 30-56 dB over the floor; its noise bursts -60..-51 dBFS at 7-16 dB;
    steady tones (ring-back, beeps) are periodic at 400-475 Hz with a 0.02-0.12 st range;
    the agent's voice leaking into the caller's channel arrives 20-30 dB below the caller.
    The emotional-speech clips lie at -42..-20 dBFS before any gain, >= 21 dB SNR, with a
    pitch range of >= 0.55 st.
    """

    min_speech_s: float = 0.25        # the shortest real answers ("yes", "okay") are ~0.3 s
    min_snr_db: float = 12.0          # line noise sits at 0-6 dB over its own floor
    min_loudness_db: float = -45.0    # bursts at <= -51 dBFS; quietest acted clip -42 dBFS
    min_range_st: float = 0.25        # a steady tone has no intonation
    max_below_own_db: float = 18.0    # leak/echo: >= 20 dB under the speaker's own median level


@dataclass(frozen=True)
class Calibration:
    """The fitted arousal model and the pace factor, as read from ``voice.yaml``.

    ``weights``/``intercept``: the logistic over the four feature z-scores.
    ``population``: (mean, sd) per feature, the norm used before a caller's own
    baseline exists. ``min_scale``: the smallest spread an own baseline may claim per
    feature (a MAD of three similar utterances is near zero). The own baseline's weight
    is ``max_own_weight * S / (S + own_half_s)`` for S seconds of baseline speech.
    Features: loudness (dBFS), pitch (semitones re 100 Hz), range (semitones), rate
    (syllable nuclei per second).
    """

    weights: Mapping[str, float]
    intercept: float
    population: Mapping[str, tuple[float, float]]
    min_scale: Mapping[str, float]
    own_half_s: float
    max_own_weight: float
    gate: Gate
    syllables_per_word: float
    source: str = ""

    def vector(self, table: Mapping[str, float]) -> np.ndarray:
        return np.array([float(table[f]) for f in FEATURES])


def parse_calibration(data: object, where: str) -> Calibration:
    """Validate the YAML document (layout: see the shipped ``coach/configs/voice.yaml``)."""
    from .safeio import number

    fix = f"restore the shipped copy of {CONFIG} or refit it with scripts/calibrate_arousal.py"
    if not isinstance(data, dict):
        raise ConfigError(f"{where} is not a mapping", fix)

    def section(name: str) -> dict:
        sec = data.get(name)
        if not isinstance(sec, dict):
            raise ConfigError(f"{where} has no '{name}' mapping", fix)
        return sec

    def num(sec: dict, key: str, path: str, **rng) -> float:
        try:
            return float(number(sec.get(key), f"{path}.{key}" if path else key, **rng))
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}", fix) from None

    weights = {f: num(section("weights"), f, "weights") for f in FEATURES}
    intercept = num(data, "intercept", "")
    pop_sec = section("population")
    population = {}
    for f in FEATURES:
        p = pop_sec.get(f)
        if not isinstance(p, dict):
            raise ConfigError(f"{where}: population.{f} needs 'mean' and 'sd'", fix)
        population[f] = (num(p, "mean", f"population.{f}"), num(p, "sd", f"population.{f}", lo=0.0, lo_open=True))
    min_scale = {f: num(section("min_scale"), f, "min_scale", lo=0.0, lo_open=True) for f in FEATURES}
    own = section("own_baseline")
    g = section("gate")
    gate = Gate(min_speech_s=num(g, "min_speech_s", "gate", lo=0.0),
                min_snr_db=num(g, "min_snr_db", "gate"),
                min_loudness_db=num(g, "min_loudness_db", "gate", hi=0.0),
                min_range_st=num(g, "min_range_st", "gate", lo=0.0),
                max_below_own_db=num(g, "max_below_own_db", "gate", lo=0.0, lo_open=True))
    return Calibration(
        weights=weights, intercept=intercept, population=population, min_scale=min_scale,
        own_half_s=num(own, "half_weight_speech_s", "own_baseline", lo=0.0, lo_open=True),
        max_own_weight=num(own, "max_weight", "own_baseline", lo=0.0, hi=1.0),
        gate=gate,
        syllables_per_word=num(section("pace"), "syllables_per_word", "pace", lo=0.5, hi=4.0),
        source=where)


def load_calibration(path: str | Path | None = None) -> Calibration:
    """Read and validate a calibration file (default: the shipped or overridden one)."""
    from .resources import locate
    from .safeio import load_yaml, read_text

    p = Path(path) if path is not None else locate(CONFIG)
    text = read_text(p, what="voice calibration", max_bytes=1 << 20, error_cls=ConfigError)
    return parse_calibration(load_yaml(text, where=str(p)), str(p))


@functools.lru_cache(maxsize=1)
def default_calibration() -> Calibration:
    """The shipped (or user-overridden) calibration, loaded on first use."""
    return load_calibration()


# ----------------------------------------------------------------------------- scoring


def features(voice: Voice) -> np.ndarray:
    """The four arousal features of a Voice, NaN where not measured.

    Pitch is in semitones re 100 Hz, so that a z-score means the same for a 120 Hz and
    a 220 Hz voice (the acted angry-neutral gap is 47-75 Hz, i.e. 4-6 st at 190 Hz).
    """
    nan = float("nan")
    return np.array([
        voice.loudness_db,
        12.0 * math.log2(voice.pitch_hz / 100.0) if voice.pitch_hz else nan,
        voice.pitch_range_st if voice.pitch_range_st is not None else nan,
        voice.rate_sps if voice.rate_sps is not None else nan,
    ], dtype=np.float64)


def own_weight(baseline_speech_s: float, cal: Calibration) -> float:
    """Weight of the caller's own baseline against the population norms."""
    s = max(0.0, float(baseline_speech_s))
    return cal.max_own_weight * s / (s + cal.own_half_s)


def zscores(x: np.ndarray, baseline: np.ndarray | None, baseline_speech_s: float, cal: Calibration) -> np.ndarray:
    """Blended z-scores of feature vector ``x``: own robust baseline and population norms.

    ``baseline`` is an (m, 4) array of the caller's earlier speech-gated utterances;
    the own part is (x - median) / max(1.4826 * MAD, min_scale), weighted by
    :func:`own_weight`; a feature missing from ``x`` scores 0, a feature missing from
    the baseline uses the population norm alone. Clipped to +-4.
    """
    pop_mean = np.array([cal.population[f][0] for f in FEATURES])
    pop_sd = np.array([cal.population[f][1] for f in FEATURES])
    z = (x - pop_mean) / pop_sd
    if baseline is not None and len(baseline):
        b = np.asarray(baseline, dtype=np.float64).reshape(-1, len(FEATURES))
        have = ~np.all(np.isnan(b), axis=0)
        if have.any():
            med = np.full(len(FEATURES), np.nan)
            mad = np.full(len(FEATURES), np.nan)
            med[have] = np.nanmedian(b[:, have], axis=0)
            mad[have] = 1.4826 * np.nanmedian(np.abs(b[:, have] - med[have]), axis=0)
            scale = np.maximum(np.nan_to_num(mad, nan=0.0), cal.vector(cal.min_scale))
            z_own = (x - med) / scale
            w = own_weight(baseline_speech_s, cal)
            z = np.where(have, w * z_own + (1.0 - w) * z, z)
    return np.clip(np.nan_to_num(z, nan=0.0), -4.0, 4.0)


def arousal_of(z: np.ndarray, cal: Calibration) -> float:
    """The calibrated logistic of the blended z-scores: 0 calm .. 1 very aroused."""
    logit = cal.intercept + float(np.dot(cal.vector(cal.weights), z))
    return float(1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, logit)))))


def is_speech(voice: Voice | None, gate: Gate) -> bool:
    """The speech gate on one Voice: enough speech, over the floor, loud enough, voiced,
    and with some intonation (see :class:`Gate` for the measured levels)."""
    return (voice is not None and voice.pitch_hz is not None and voice.speech_s >= gate.min_speech_s
            and voice.snr_db >= gate.min_snr_db and voice.loudness_db >= gate.min_loudness_db
            and (voice.pitch_range_st or 0.0) >= gate.min_range_st)


def words_per_minute(rate_sps: float, syllables_per_word: float | None = None) -> float:
    """Pace from syllable nuclei: ``rate_sps * 60 / syllables_per_word``.

    Words per minute of SPEAKING time (pauses of 0.3 s or more excluded), not of the
    whole turn: the read-speech narrator reads 160-207 on this scale, the real call's
    agent 184-329 (median 254). Counting recognised words instead depends on what the
    recognizer makes of phone audio; nuclei need no words. ``syllables_per_word``
    (nuclei per word, ~1.0: see the NUCLEUS_* constants) defaults to ``voice.yaml``.
    Pace over a whole turn: multiply by ``speech_s / (end - start)``.
    """
    spw = default_calibration().syllables_per_word if syllables_per_word is None else float(syllables_per_word)
    return float(rate_sps) * 60.0 / spw


# ----------------------------------------------------------------------------- the tracker


@dataclass(frozen=True)
class VoiceOptions:
    """Per-channel tracker settings.

    ``buffer_s``: audio kept for :meth:`VoiceTracker.measure` (an utterance is measured
    when the recognizer closes it, seconds after it started; 30 s covers the longest
    utterances). ``floor_window_s``/``floor_percentile``: the running noise floor is
    that percentile of the 30 ms band-limited frame levels of the last window (on a
    two-party call each side is quiet most of the time: over half of the real call's
    caller channel lies at -75..-60 dBFS, its floor reads -70). ``baseline_utterances``: how many recent
    speech-gated utterances form the caller's own baseline. ``calibration``: a path to a
    voice.yaml, or None for the shipped one.
    """

    buffer_s: float = 30.0
    floor_window_s: float = 20.0
    floor_percentile: float = 10.0
    baseline_utterances: int = 40
    calibration: str | None = None

    def __post_init__(self) -> None:
        if not (1.0 <= self.buffer_s <= 600.0):
            raise ValueError(f"buffer_s must be within [1, 600], got {self.buffer_s}")
        if not (1.0 <= self.floor_window_s <= 600.0):
            raise ValueError(f"floor_window_s must be within [1, 600], got {self.floor_window_s}")
        if not (0.0 < self.floor_percentile < 50.0):
            raise ValueError(f"floor_percentile must be within (0, 50), got {self.floor_percentile}")
        if not (1 <= self.baseline_utterances <= 10_000):
            raise ValueError(f"baseline_utterances must be within [1, 10000], got {self.baseline_utterances}")


class VoiceTracker:
    """Voice measurement for one speaker channel; used from that channel's thread only.

    Memory is fixed: a ring buffer of ``buffer_s`` of int16 audio, a ring of 10 ms
    band-limited frame powers for the noise floor, and at most ``baseline_utterances``
    feature vectors. Usage on the recognizer thread::

        tracker.feed(chunk)                         # every chunk
        v = tracker.measure(utt.start, utt.end)     # at each utterance
        if not tracker.is_speech(v): drop the utterance
        customer: v = replace(v, arousal=tracker.arousal(v)); tracker.observe(v)
        agent:    tracker.observe(v); wpm = tracker.words_per_minute(v)   # never arousal

    Made with ``speaker=Speaker.AGENT``, :meth:`arousal` raises and :meth:`observe` keeps
    only the level (for the leak gate).
    """

    def __init__(self, options: VoiceOptions = VoiceOptions(), calibration: Calibration | None = None,
                 speaker: Speaker | None = None) -> None:
        self.options = options
        self.speaker = speaker
        if calibration is None:
            calibration = default_calibration() if options.calibration is None else load_calibration(options.calibration)
        self.calibration = calibration
        self._baseline: deque[tuple[np.ndarray, float, Voice]] = deque(maxlen=options.baseline_utterances)
        self._levels: deque[float] = deque(maxlen=options.baseline_utterances)
        self._rate = 0
        self._t0 = 0.0

    # -- audio -------------------------------------------------------------------

    def _start(self, rate: int, t: float) -> None:
        self._rate = int(rate)
        self._t0 = float(t)
        self._buf = np.zeros(int(round(self.options.buffer_s * rate)), dtype=np.int16)
        self._written = 0                              # samples written since the start, ever
        self._block = max(1, rate // 100)              # 10 ms power blocks for the floor
        self._sos = _bandpass(rate, *BAND_HZ) if rate > 2 * BAND_HZ[0] * 1.2 else None
        self._zi = None
        self._carry = np.zeros(0)
        self._pow = np.zeros(int(round(self.options.floor_window_s * 100)), dtype=np.float64)
        self._pow_n = 0                                # blocks written, ever
        self._floor_cache: float | None = None
        self._floor_dirty = True
        self._floor_at = -10**9  # _pow_n when _active last refreshed the floor
        self.last_active: float | None = None          # call time of the latest chunk with speech energy
        self.active_since: float | None = None         # start of the current run of activity (gaps < 0.3 s)

    @property
    def sample_rate(self) -> int:
        return self._rate

    @property
    def buffer_samples(self) -> int:
        """Size of the audio ring buffer (constant once the first chunk fixed the rate)."""
        return 0 if not self._rate else len(self._buf)

    def feed(self, chunk: AudioChunk) -> None:
        """Append a chunk of this channel's audio (call it for every chunk, in order).

        A jump forward in call time (a dropped block) is filled with digital silence so
        that spans stay aligned; the floor ignores digital silence. A chunk at another
        sample rate starts the buffer and the floor afresh (the baseline is kept).
        """
        samples = np.asarray(chunk.samples).ravel()
        if not self._rate or chunk.sample_rate != self._rate:
            self._start(chunk.sample_rate, chunk.t)
        expected = int(round((chunk.t - self._t0) * self._rate))
        gap = expected - self._written
        if gap > self._rate // 20:                     # > 50 ms missing
            self._write(np.zeros(min(gap, len(self._buf)), dtype=np.int16))
            self._written = expected
        if len(samples) == 0:
            return
        self._write(samples.astype(np.int16, copy=False))
        p = self._floor_update(samples)
        if p is not None and self._active(p):
            if self.last_active is None or chunk.t - self.last_active > 0.3:
                self.active_since = chunk.t
            self.last_active = chunk.t + len(samples) / self._rate

    def _write(self, x: np.ndarray) -> None:
        cap = len(self._buf)
        if len(x) > cap:
            self._written += len(x) - cap
            x = x[-cap:]
        pos = self._written % cap
        first = min(len(x), cap - pos)
        self._buf[pos: pos + first] = x[:first]
        self._buf[: len(x) - first] = x[first:]
        self._written += len(x)

    def _active(self, p: np.ndarray) -> bool:
        """Voice activity of one chunk from its 10 ms band powers: at least 50 ms above
        both the speech gate's level and its SNR over the running floor. Energy only,
        so it works when the words fail; used for dead air (never for emotion)."""
        gate = self.calibration.gate
        # The floor is a percentile over 20 s: refreshing it once a second is plenty, and
        # keeps this per-chunk check to a comparison.
        if self._floor_dirty and self._pow_n - self._floor_at >= 100:
            self._floor_at = self._pow_n
            self.noise_floor_db()
        floor = self._floor_cache
        thr = max(gate.min_loudness_db, (floor if floor is not None else -90.0) + gate.min_snr_db)
        return int(np.count_nonzero(_db(p) >= thr)) >= 5

    def _floor_update(self, samples: np.ndarray) -> np.ndarray | None:
        x = samples.astype(np.float64) / 32768.0
        if self._sos is not None:
            if self._zi is None:
                self._zi = np.zeros((self._sos.shape[0], 2))
            x, self._zi = sosfilt(self._sos, x, zi=self._zi)
        x = np.concatenate([self._carry, x])
        nb = len(x) // self._block
        self._carry = x[nb * self._block:]
        if nb == 0:
            return None
        p = np.mean(x[: nb * self._block].reshape(nb, self._block) ** 2, axis=1)
        powers = p
        cap = len(self._pow)
        if nb > cap:
            self._pow_n += nb - cap
            p, nb = p[-cap:], cap
        pos = self._pow_n % cap
        first = min(len(p), cap - pos)
        self._pow[pos: pos + first] = p[:first]
        self._pow[: len(p) - first] = p[first:]
        self._pow_n += nb
        self._floor_dirty = True
        return powers

    def noise_floor_db(self) -> float | None:
        """The channel's noise floor: a low percentile of recent 30 ms frame levels.

        None until 0.5 s of non-silent audio has been seen (then :func:`measure` falls
        back on the stretch's own floor). Digital silence (a gated line) is ignored;
        a noise burst is too short to move a 10th percentile over 20 s.
        """
        if not self._floor_dirty:
            return self._floor_cache
        cap = len(self._pow)
        n = min(self._pow_n, cap)
        if n < 3:
            return None
        pos = self._pow_n % cap
        p = np.concatenate([self._pow[pos:], self._pow[:pos]]) if self._pow_n > cap else self._pow[:n]
        p30 = np.convolve(p, np.ones(3) / 3.0, mode="valid")     # 30 ms frames, 10 ms hop, as measure()
        e = _db(p30)
        e = e[e > DIGITAL_SILENCE_DB]
        self._floor_cache = float(np.percentile(e, self.options.floor_percentile)) if len(e) >= 50 else None
        self._floor_dirty = False
        return self._floor_cache

    def span(self, start: float, end: float) -> np.ndarray:
        """The int16 samples of call-time span [start, end) still in the buffer (may be empty)."""
        if not self._rate:
            return np.zeros(0, dtype=np.int16)
        cap = len(self._buf)
        i0 = max(int(round((start - self._t0) * self._rate)), self._written - cap, 0)
        i1 = min(int(round((end - self._t0) * self._rate)), self._written)
        if i1 <= i0:
            return np.zeros(0, dtype=np.int16)
        a, n = i0 % cap, i1 - i0
        if a + n <= cap:
            return self._buf[a: a + n].copy()
        return np.concatenate([self._buf[a:], self._buf[: a + n - cap]])

    def measure(self, start: float, end: float) -> Voice | None:
        """The Voice of call-time span [start, end) against the running noise floor.

        None when the span is no longer (or not yet) in the buffer or holds no speech frame.
        """
        x = self.span(start, end)
        if not self._rate or len(x) < int(self._rate * FRAME_S):
            return None
        return measure(x, self._rate, self.noise_floor_db())

    # -- gating and arousal ---------------------------------------------------------

    def is_speech(self, voice: Voice | None) -> bool:
        """False for line noise, noise bursts, tones and the other side's leak: too little
        speech, too low SNR or level, no voiced frames, no intonation, or (once the own
        baseline holds 3 utterances) ``max_below_own_db`` under the speaker's median level.
        Drop such utterances and never learn from them."""
        gate = self.calibration.gate
        if not is_speech(voice, gate):
            return False
        assert voice is not None
        if len(self._levels) >= 3 and voice.loudness_db < float(np.median(self._levels)) - gate.max_below_own_db:
            return False
        return True

    def baseline(self, exclude: Voice | None = None) -> tuple[np.ndarray, float]:
        """(m, 4) features of the own baseline and its seconds of speech, without ``exclude``."""
        rows, secs, skipped = [], 0.0, False
        for x, s, v in self._baseline:
            if not skipped and exclude is not None and (v is exclude or v == exclude):
                skipped = True
                continue
            rows.append(x)
            secs += s
        return (np.array(rows) if rows else np.zeros((0, len(FEATURES)))), secs

    def arousal(self, voice: Voice) -> float:
        """0..1 arousal of a CUSTOMER utterance; a tracker made for the agent refuses.

        Loudness, pitch, pitch range and rate as z-scores against the caller's own
        robust baseline (median/MAD of recent speech-gated utterances, this one
        excluded) blended with population norms, the own weight growing with the
        baseline's speech time, through the calibrated logistic. Pure with respect to
        the tracker: call :meth:`observe` afterwards to learn from the utterance.
        """
        if self.speaker == Speaker.AGENT:
            raise ValueError("arousal is never computed for the agent (EU AI Act, Art. 5(1)(f)): "
                             "use the agent's pace (words_per_minute) instead")
        b, secs = self.baseline(exclude=voice)
        return arousal_of(zscores(features(voice), b, secs, self.calibration), self.calibration)

    def observe(self, voice: Voice | None) -> bool:
        """Learn from a speech-gated utterance; refused (False) unless :meth:`is_speech`.

        Its level joins the leak gate's reference (any speaker); for a customer (or a
        tracker made without a speaker) its features join the arousal baseline. Nothing
        about the agent's voice is kept beyond its level.
        """
        if not self.is_speech(voice):
            return False
        assert voice is not None
        self._levels.append(float(voice.loudness_db))
        if self.speaker != Speaker.AGENT:
            self._baseline.append((features(voice), float(voice.speech_s), voice))
        return True

    def words_per_minute(self, voice: Voice) -> float | None:
        """Pace of an (agent) utterance from its syllable nuclei, None without a rate."""
        if voice.rate_sps is None:
            return None
        return words_per_minute(voice.rate_sps, self.calibration.syllables_per_word)


__all__ = [
    "Analysis", "Calibration", "Gate", "VoiceOptions", "VoiceTracker", "analyse", "arousal_of", "default_calibration",
    "features", "is_speech", "load_calibration", "measure", "own_weight", "parse_calibration", "words_per_minute",
    "zscores",
]
