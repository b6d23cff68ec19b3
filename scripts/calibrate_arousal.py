#!/usr/bin/env python3
"""Fit ``coach/configs/voice.yaml`` (the arousal logistic, its norms, the speech gate and
the pace factor) and print the evidence.

Arousal, on ``../shared/data/audio/emotional_speech`` (two speakers, OAF and YAF, saying
"Say the word ___" in six emotions; CC BY-NC-ND, used for calibration and evaluation
only, no clip is ever copied into the repository):

* every clip goes through the phone path the pipeline sees: 8 kHz, 300-3400 Hz,
  G.711 mu-law, back to 16 kHz (:func:`telephone`);
* the WORDS are split by ``crc32(word) % 2``: even = tuning, odd = held-out, so no
  held-out clip shares its word with a tuning clip;
* a speaker's own baseline is the robust statistics of that speaker's tuning clips of
  all six emotions (a call's mix), leaving the scored clip out;
* the logistic (angry = 1, neutral = 0) is fitted on tuning words only;
* the reported AUC is angry vs neutral held-out clips of the same speaker, scored with
  :meth:`coach.voice.VoiceTracker.arousal`'s own code against baselines from tuning clips only.

Pace, on ``../shared/data/audio/read_speech`` (cards: digits and card names; librivox:
read sentences), through the same phone path: ``syllables_per_word`` is fitted on one
folder and tested on the other, both ways; the shipped value is fitted on both.

Run: ``.venv/bin/python scripts/calibrate_arousal.py [--write]`` (without ``--write`` it
only reports). The test suite imports :func:`heldout_auc` and :func:`pace_report`.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import math
import re
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import butter, sosfilt

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from coach import voice as V  # noqa: E402
from coach.audio import resample, to_int16  # noqa: E402
from coach.events import Voice  # noqa: E402

AUDIO = ROOT.parent / "shared" / "data" / "audio"
EMOTIONAL = AUDIO / "emotional_speech"
READ_SPEECH = AUDIO / "read_speech"
CONTACT_CENTER = AUDIO / "contact_center"
CONFIG_OUT = ROOT / "coach" / "configs" / "voice.yaml"

# Population norms that the two-speaker corpus cannot give.
# Loudness: between the nominal active speech level of a phone line (ITU-T P.56 / G.711,
# -26 dBov) and the real contact-centre call (both sides at -18..-17 dBFS in the band,
# see call_report()). The corpus is shifted by one gain so its tuning median sits there.
NOMINAL_LEVEL_DB = -24.0
LOUDNESS_POP_SD_DB = 6.0      # line gains differ by +-6 dB or more between calls
# Pitch: adult male ~120 Hz, female ~210 Hz: geometric mean 159 Hz = 8.0 st re 100 Hz;
# sd = half the gender gap (4.85 st) and ~2 st within a gender, combined: 5.2 st. The corpus
# speakers are both women, so its own mean would read every man as calm.
PITCH_POP_MEAN_ST = 8.0
PITCH_POP_SD_ST = 5.2
OWN_HALF_S = 10.0             # own baseline counts half (x max) after 10 s of the caller's speech
MAX_OWN_WEIGHT = 0.85         # population norms always keep 15 %: an all-angry call still reads aroused
L2 = 1.0


# ----------------------------------------------------------------------------- audio


def telephone(x: np.ndarray, rate: int, mu_law: bool = True) -> np.ndarray:
    """Float audio -> what the pipeline sees of a phone call: 8 kHz, 300-3400 Hz, mu-law, 16 kHz int16."""
    y = resample(np.asarray(x, dtype=np.float64), rate, 8000)
    y = sosfilt(butter(4, [300.0, 3400.0], btype="bandpass", fs=8000, output="sos"), y)
    if mu_law:
        mu = 255.0
        y = np.clip(y, -1.0, 1.0)
        c = np.round(np.sign(y) * np.log1p(mu * np.abs(y)) / np.log1p(mu) * 127.0) / 127.0
        y = np.sign(c) * ((1.0 + mu) ** np.abs(c) - 1.0) / mu
    return to_int16(resample(y, 8000, 16000))


def _mono(path: Path) -> tuple[np.ndarray, int]:
    x, sr = sf.read(str(path), dtype="float64", always_2d=True)
    return x.mean(axis=1), int(sr)


def is_tuning(word: str) -> bool:
    """The deterministic word split: crc32 even = tuning, odd = held-out."""
    return zlib.crc32(word.strip().lower().encode("utf-8")) % 2 == 0


# ----------------------------------------------------------------------------- emotional speech


@dataclass(frozen=True)
class Clip:
    file: str
    speaker: str
    emotion: str
    word: str
    voice: Voice | None

    @property
    def tuning(self) -> bool:
        return is_tuning(self.word)


@functools.lru_cache(maxsize=2)
def emotional_clips(root: str = str(EMOTIONAL)) -> tuple[Clip, ...]:
    """Every clip of the manifest measured through the phone path (cached per process)."""
    base = Path(root)
    manifest = base / "manifest.csv"
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest} is missing: check out ../shared/data beside the repository")
    out = []
    with open(manifest, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            x, sr = _mono(base / row["file"])
            out.append(Clip(row["file"], row["speaker"], row["emotion"], row["word"],
                            V.measure(telephone(x, sr), 16000)))
    return tuple(out)


def usable(clips) -> list[Clip]:
    """Clips that pass the speech gate's level-free parts (voiced, enough speech)."""
    return [c for c in clips if c.voice is not None and c.voice.pitch_hz is not None
            and c.voice.speech_s >= 0.3]


def corpus_gain(clips) -> float:
    """dB to add so the tuning clips' median speech level sits at the nominal line level."""
    tune = [c.voice.loudness_db for c in clips if c.tuning]
    return NOMINAL_LEVEL_DB - float(np.median(tune))


def shifted(clips, gain_db: float) -> list[Clip]:
    return [dataclasses.replace(c, voice=dataclasses.replace(c.voice, loudness_db=c.voice.loudness_db + gain_db))
            for c in clips]


def population_norms(clips) -> dict[str, tuple[float, float]]:
    """Loudness and pitch: the constants above. Range and rate: tuning clips, all emotions."""
    f = np.array([V.features(c.voice) for c in clips if c.tuning])
    rng, rate = f[:, 2], f[:, 3]
    return {
        "loudness": (NOMINAL_LEVEL_DB, LOUDNESS_POP_SD_DB),
        "pitch": (PITCH_POP_MEAN_ST, PITCH_POP_SD_ST),
        "range": (float(np.nanmean(rng)), float(np.nanstd(rng))),
        "rate": (float(np.nanmean(rate)), float(np.nanstd(rate))),
    }


# The smallest spread an own baseline may claim: about one just-noticeable difference
# in running speech (loudness ~1.5 dB, pitch and pitch range ~1 st ('t Hart 1981), tempo
# ~10 % of a 3 syll/s rate). The acted neutral clips vary far less than real talk (pitch
# 0.4 st vs 1.4-4.3 st for the two sides of the real call), so without a floor three
# similar utterances would make any small change read as a 4-sigma event.
MIN_SCALE_FLOOR = {"loudness": 1.5, "pitch": 1.0, "range": 1.0, "rate": 0.3}


def min_scales(clips) -> dict[str, float]:
    """Half the within-speaker spread (1.4826 MAD) of neutral tuning clips, per feature,
    at least MIN_SCALE_FLOOR."""
    per = []
    for sp in sorted({c.speaker for c in clips}):
        f = np.array([V.features(c.voice) for c in clips if c.tuning and c.speaker == sp and c.emotion == "neutral"])
        med = np.nanmedian(f, axis=0)
        per.append(1.4826 * np.nanmedian(np.abs(f - med), axis=0))
    s = 0.5 * np.median(np.array(per), axis=0)
    return {name: float(max(v, MIN_SCALE_FLOOR[name])) for name, v in zip(V.FEATURES, s)}


def draft_calibration(clips, weights=None, intercept=0.0, spw=1.3, gate=None) -> V.Calibration:
    return V.Calibration(
        weights=weights or {f: 0.0 for f in V.FEATURES}, intercept=intercept,
        population=population_norms(clips), min_scale=min_scales(clips),
        own_half_s=OWN_HALF_S, max_own_weight=MAX_OWN_WEIGHT, gate=gate or V.Gate(),
        syllables_per_word=spw, source="draft")


def baselines(clips, speaker: str, exclude: Clip | None = None) -> tuple[np.ndarray, float]:
    """A speaker's own baseline from tuning clips of all emotions, without ``exclude``."""
    rows = [c for c in clips if c.tuning and c.speaker == speaker and c is not exclude]
    return np.array([V.features(c.voice) for c in rows]), float(sum(c.voice.speech_s for c in rows))


def zmatrix(clips, targets, cal: V.Calibration, own: bool = True) -> np.ndarray:
    out = []
    for c in targets:
        b, secs = baselines(clips, c.speaker, exclude=c) if own else (None, 0.0)
        out.append(V.zscores(V.features(c.voice), b, secs, cal))
    return np.array(out)


def fit_logistic(z: np.ndarray, y: np.ndarray, l2: float = L2, iters: int = 50) -> tuple[np.ndarray, float]:
    """L2-penalised logistic regression by Newton's method (intercept not penalised)."""
    x = np.hstack([np.ones((len(z), 1)), z])
    w = np.zeros(x.shape[1])
    pen = np.full(x.shape[1], l2)
    pen[0] = 0.0
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(x @ w, -60, 60)))
        g = x.T @ (p - y) + pen * w
        h = (x * (p * (1 - p))[:, None]).T @ x + np.diag(pen)
        step = np.linalg.solve(h, g)
        w -= step
        if np.max(np.abs(step)) < 1e-8:
            break
    return w[1:], float(w[0])


def auc(pos, neg) -> float:
    """P(score of a positive > score of a negative), ties counting half."""
    pos, neg = np.asarray(pos, float), np.asarray(neg, float)
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    gt = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(gt / (len(pos) * len(neg)))


def paired_auc(scored: list[tuple[Clip, float]]) -> float:
    """AUC over same-speaker (angry, neutral) pairs only."""
    gt, n = 0.0, 0
    for sp in sorted({c.speaker for c, _ in scored}):
        pos = [s for c, s in scored if c.speaker == sp and c.emotion == "angry"]
        neg = [s for c, s in scored if c.speaker == sp and c.emotion == "neutral"]
        if pos and neg:
            gt += auc(pos, neg) * len(pos) * len(neg)
            n += len(pos) * len(neg)
    return gt / n if n else float("nan")


@dataclass(frozen=True)
class Fit:
    calibration: V.Calibration
    gain_db: float
    clips: tuple[Clip, ...]          # usable clips, loudness shifted by gain_db


def fit(clips=None) -> Fit:
    """Fit the arousal logistic on tuning words (angry vs neutral, own baseline LOO)."""
    clips = usable(emotional_clips() if clips is None else clips)
    gain = corpus_gain(clips)
    clips = shifted(clips, gain)
    cal = draft_calibration(clips)
    train = [c for c in clips if c.tuning and c.emotion in ("angry", "neutral")]
    z = zmatrix(clips, train, cal)
    y = np.array([1.0 if c.emotion == "angry" else 0.0 for c in train])
    w, b = fit_logistic(z, y)
    # The baseline here is a mix of six acted emotions, so neutral clips sit below it
    # (z < 0); in a call the baseline is mostly the caller's calm talk. Move the intercept
    # so that an utterance AT the baseline reads what a neutral clip reads here.
    zn = np.median(z[y == 0], axis=0)
    b_call = b + float(np.dot(w, zn))
    cal = dataclasses.replace(cal, weights=dict(zip(V.FEATURES, map(float, w))), intercept=b_call)
    return Fit(cal, gain, tuple(clips))


def score(f: Fit, targets, own: bool = True) -> list[tuple[Clip, float]]:
    z = zmatrix(f.clips, targets, f.calibration, own=own)
    return [(c, V.arousal_of(zi, f.calibration)) for c, zi in zip(targets, z)]


def heldout_auc(f: Fit | None = None, calibration: V.Calibration | None = None) -> dict:
    """Held-out-word AUC of arousal, angry vs neutral clips of the same speaker.

    Baselines come from tuning-word clips only. ``calibration`` (e.g. the shipped
    voice.yaml) replaces the freshly fitted one when given. Also: the AUC with no own
    baseline at all (population norms only: a caller angry from the first word), per
    speaker, and the matched-word pairs (same speaker and word, angry vs neutral).
    """
    f = f or fit()
    if calibration is not None:
        f = dataclasses.replace(f, calibration=calibration)
    held = [c for c in f.clips if not c.tuning and c.emotion in ("angry", "neutral")]
    scored = score(f, held)
    cold = score(f, held, own=False)
    per = {sp: paired_auc([(c, s) for c, s in scored if c.speaker == sp]) for sp in sorted({c.speaker for c in held})}
    matched = []
    for c, s in scored:
        if c.emotion == "angry":
            for c2, s2 in scored:
                if c2.emotion == "neutral" and c2.speaker == c.speaker and c2.word == c.word:
                    matched.append(s > s2)
    feat = {}
    fz = zmatrix(f.clips, held, f.calibration)
    for i, name in enumerate(V.FEATURES):
        feat[name] = paired_auc([(c, float(z[i])) for c, z in zip(held, fz)])
    return {
        "auc": paired_auc(scored), "auc_cold_start": paired_auc(cold), "per_speaker": per,
        "per_feature_auc": feat, "n_angry": sum(c.emotion == "angry" for c in held),
        "n_neutral": sum(c.emotion == "neutral" for c in held),
        "matched_words": (int(sum(matched)), len(matched)),
        "mean_arousal": {e: float(np.mean([s for c, s in scored if c.emotion == e])) for e in ("angry", "neutral")},
    }


def feature_differences(clips=None) -> dict[str, dict[str, float]]:
    """Median angry minus median neutral per speaker (all words): dB, Hz, semitones, syll/s;
    and the pitch-range ratio."""
    clips = usable(emotional_clips() if clips is None else clips)
    out = {}
    for sp in sorted({c.speaker for c in clips}):
        a = [c.voice for c in clips if c.speaker == sp and c.emotion == "angry"]
        n = [c.voice for c in clips if c.speaker == sp and c.emotion == "neutral"]

        def med(vs, attr):
            return float(np.median([getattr(v, attr) for v in vs if getattr(v, attr) is not None]))
        out[sp] = {
            "loudness_db": med(a, "loudness_db") - med(n, "loudness_db"),
            "pitch_hz": med(a, "pitch_hz") - med(n, "pitch_hz"),
            "pitch_range_st": med(a, "pitch_range_st") - med(n, "pitch_range_st"),
            "pitch_range_ratio": med(a, "pitch_range_st") / max(1e-6, med(n, "pitch_range_st")),
            "rate_sps": med(a, "rate_sps") - med(n, "rate_sps"),
            "neutral_pitch_hz": med(n, "pitch_hz"),
        }
    return out


# ----------------------------------------------------------------------------- pace


def syllables(word: str) -> int:
    """Rough syllable count of an English word (vowel groups, silent final e)."""
    w = re.sub(r"[^a-z]", "", word.lower())
    if not w:
        return 0
    groups = re.findall(r"[aeiouy]+", w)
    n = len(groups)
    if w.endswith("e") and not w.endswith(("le", "ee", "ie")) and n > 1:
        n -= 1
    n += len(re.findall(r"[^aeiou]ia|iou|[^aeiou]ea(?!r)", w)) if n > 1 else 0
    return max(1, n)


@dataclass(frozen=True)
class PaceItem:
    folder: str
    wav: str
    words: int
    syllables: int
    voice: Voice | None

    @property
    def nuclei(self) -> float:
        return (self.voice.rate_sps or 0.0) * self.voice.speech_s if self.voice else 0.0

    @property
    def ref_wpm(self) -> float:
        return self.words / self.voice.speech_s * 60.0


@functools.lru_cache(maxsize=2)
def read_speech_items(root: str = str(READ_SPEECH)) -> tuple[PaceItem, ...]:
    """(folder, wav, words) of every transcribed read_speech file, measured through the phone path."""
    base = Path(root)
    items = []
    for tf in sorted(base.glob("*/*transcription")):
        for line in tf.read_text(encoding="utf-8").splitlines():
            m = re.match(r"(.*)\((\S+)\)\s*$", line.strip())
            if not m:
                continue
            words = [w for w in m.group(1).split() if w not in ("<s>", "</s>", "<sil>")]
            wav = tf.parent / f"{m.group(2)}.wav"
            if wav.is_file() and words:
                x, sr = _mono(wav)
                items.append(PaceItem(tf.parent.name, wav.name, len(words), sum(syllables(w) for w in words),
                                      V.measure(telephone(x, sr), 16000)))
    if not items:
        raise FileNotFoundError(f"no transcribed wavs under {base}")
    return tuple(items)


def fit_spw(items) -> float:
    """syllables_per_word minimising the mean absolute relative wpm error on ``items``."""
    grid = np.arange(0.8, 2.2, 0.005)
    err = [np.mean([abs(i.nuclei / (i.words * s) - 1.0) for i in items]) for s in grid]
    return float(grid[int(np.argmin(err))])


def pace_errors(items, spw: float) -> list[float]:
    """Relative error of the estimated wpm per file: est / reference - 1."""
    return [V.words_per_minute(i.voice.rate_sps, spw) / i.ref_wpm - 1.0 for i in items]


def pace_report(items=None) -> dict:
    """Cross-folder pace errors (fit on one folder, test on the other) and the pooled fit."""
    items = list(read_speech_items() if items is None else items)
    folders = sorted({i.folder for i in items})
    out: dict = {"folders": {}, "cross": {}}
    for fo in folders:
        its = [i for i in items if i.folder == fo]
        out["folders"][fo] = {
            "files": len(its), "words": sum(i.words for i in its), "syllables": sum(i.syllables for i in its),
            "nuclei": sum(i.nuclei for i in its),
            "nuclei_per_syllable": sum(i.nuclei for i in its) / sum(i.syllables for i in its),
            "ref_wpm": [round(i.ref_wpm, 1) for i in its],
        }
    for train in folders:
        spw = fit_spw([i for i in items if i.folder == train])
        for test in folders:
            if test != train:
                errs = pace_errors([i for i in items if i.folder == test], spw)
                out["cross"][f"{train}->{test}"] = {"spw": spw, "mare": float(np.mean(np.abs(errs))),
                                                    "max": float(np.max(np.abs(errs))),
                                                    "per_file": [round(e, 3) for e in errs]}
    spw = fit_spw(items)
    errs = pace_errors(items, spw)
    out["pooled"] = {"spw": spw, "mare": float(np.mean(np.abs(errs))), "max": float(np.max(np.abs(errs))),
                     "per_file": {f"{i.folder}/{i.wav}": round(e, 3) for i, e in zip(items, errs)}}
    return out


# ----------------------------------------------------------------------------- the real call


def call_channels() -> dict[str, Path]:
    """The real call's two sides: {"agent": wav, "customer": wav}."""
    found = {}
    for side, pat in (("agent", "*agent*.wav"), ("customer", "*caller*.wav")):
        hits = sorted(CONTACT_CENTER.glob(pat))
        if not hits:
            raise FileNotFoundError(f"no {pat} under {CONTACT_CENTER}")
        found[side] = hits[0]
    return found


def segments(x16: np.ndarray, rate: int = 16000, gap_s: float = 0.5, min_s: float = 0.2) -> list[tuple[float, float]]:
    """Talk spurts by energy alone (a stand-in for the recognizer's utterances): band
    level over the channel's 10th percentile + 10 dB, gaps under ``gap_s`` bridged. Noise
    bursts come out as spurts too, which is the point: the gate must drop them."""
    a = V.analyse(x16, rate, None)
    e = a.energy_db
    live = e > V.DIGITAL_SILENCE_DB
    floor = float(np.percentile(e[live], 10))
    on = e > floor + 10.0
    runs = V._runs(on)
    merged: list[list[int]] = []
    for r0, r1 in runs:
        if merged and (r0 - merged[-1][1]) * V.HOP_S < gap_s:
            merged[-1][1] = r1
        else:
            merged.append([r0, r1])
    return [(r0 * V.HOP_S, r1 * V.HOP_S) for r0, r1 in merged if (r1 - r0) * V.HOP_S >= min_s]


def call_voices(side: str, calibration: V.Calibration | None = None,
                chunk_s: float = 0.1) -> list[tuple[float, float, Voice | None, bool]]:
    """Stream one side of the real call (16 kHz, as the pipeline) through a VoiceTracker
    in ``chunk_s`` chunks and treat each talk spurt, once its end has been fed, as the
    pipeline treats an utterance: measure, gate, then (customer) arousal and observe.
    Returns (start, end, voice with arousal for the customer, kept)."""
    from coach.events import AudioChunk, Speaker
    x, sr = _mono(call_channels()[side])
    x16 = to_int16(resample(x, sr, 16000))
    spans = segments(x16)
    spk = Speaker.AGENT if side == "agent" else Speaker.CUSTOMER
    tr = V.VoiceTracker(calibration=calibration or draft_calibration(usable(emotional_clips())), speaker=spk)
    step = int(chunk_s * 16000)
    out, j = [], 0
    for i in range(0, len(x16), step):
        tr.feed(AudioChunk(spk, i / 16000, x16[i: i + step], 16000))
        t = (i + step) / 16000
        while j < len(spans) and spans[j][1] + 0.1 <= t:
            a, b = spans[j]
            v = tr.measure(a - 0.1, b + 0.1)
            kept = tr.is_speech(v)
            if kept and spk == Speaker.CUSTOMER:
                v = dataclasses.replace(v, arousal=round(tr.arousal(v), 3))
            if kept:
                tr.observe(v)
            out.append((a, b, v, kept))
            j += 1
    return out


def call_report(calibration: V.Calibration | None = None) -> dict:
    """The gate, the feature spread and the caller's arousal on the real call
    (Apache-2.0, contact_center), through the tracker as the pipeline would use it."""
    out = {}
    for side in ("customer", "agent"):
        vs = call_voices(side, calibration)
        kept = [v for _, _, v, k in vs if k]
        dropped = [v for _, _, v, k in vs if not k]
        f = np.array([V.features(v) for v in kept]) if kept else np.zeros((0, 4))
        med = np.nanmedian(f, axis=0) if len(f) else np.full(4, np.nan)
        mad = 1.4826 * np.nanmedian(np.abs(f - med), axis=0) if len(f) else np.full(4, np.nan)
        out[side] = {
            "spurts": len(vs), "speech": len(kept), "dropped": len(dropped),
            "dropped_levels_db": sorted(round(v.loudness_db, 1) for v in dropped if v is not None),
            "median": dict(zip(V.FEATURES, np.round(med, 2).tolist())),
            "spread": dict(zip(V.FEATURES, np.round(mad, 2).tolist())),
        }
        if side == "customer":
            out[side]["arousal"] = [(round(a, 1), v.arousal) for a, _, v, k in vs if k]
        else:
            spw = (calibration.syllables_per_word if calibration else 1.0)
            out[side]["wpm"] = [round(V.words_per_minute(v.rate_sps, spw)) for v in kept if v.rate_sps]
    return out


# ----------------------------------------------------------------------------- output


def yaml_text(cal: V.Calibration, report: dict) -> str:
    def f(v: float) -> str:
        return f"{v:.4g}"
    h = report["heldout"]
    pace = report["pace"]
    lines = [
        "# Voice arousal and pace calibration for coach.voice (written by scripts/calibrate_arousal.py).",
        "#",
        "# Arousal: logistic (angry = 1 vs neutral = 0) over four z-scores (loudness dBFS, pitch in",
        "# semitones re 100 Hz, pitch range 12*log2(p90/p10) semitones, syllable nuclei per second),",
        "# each blended from the caller's own robust baseline (median / 1.4826 MAD, at least min_scale)",
        "# and the population norms below; own weight = max_weight * S / (S + half_weight_speech_s),",
        "# S = seconds of baseline speech.",
        "# Fitted on the emotional_speech set (speakers OAF, YAF; CC BY-NC-ND, not redistributed)",
        "# after the phone path (8 kHz, 300-3400 Hz, mu-law, 16 kHz), on the tuning words",
        "# (crc32(word) % 2 == 0), each speaker's baseline = their tuning clips of all six emotions.",
        f"# Held-out words: AUC {h['auc']:.3f} (angry {h['n_angry']} vs neutral {h['n_neutral']}, same",
        f"# speaker), {h['auc_cold_start']:.3f} with population norms only (no own baseline yet).",
        "# The intercept is moved by w . median z(neutral tuning clips), so that an utterance at the",
        f"# caller's own baseline (z = 0) reads {1 / (1 + math.exp(-cal.intercept)):.2f}, as a neutral clip does here.",
        f"# Corpus gain {report['gain_db']:+.1f} dB puts its tuning median at the nominal line level.",
        "# Loudness and pitch norms are not from the corpus (two women): -24 dBFS +- 6 (ITU-T P.56",
        "# nominal -26 dBov, the real call's two sides at -18..-17) and 8.0 +- 5.2 st (159 Hz: men ~120,",
        "# women ~210 Hz). Range and rate norms: tuning clips, all emotions. min_scale: half the",
        "# neutral clips' spread, at least ~1 just-noticeable difference (1.5 dB, 1 st, 1 st, 0.3/s).",
        "#",
        "# Pace: wpm = nuclei per second of speaking time (pauses >= 0.3 s excluded) * 60 /",
        "# syllables_per_word, fitted on read_speech (cards + librivox) through the same phone path:",
        f"# mean abs error {pace['pooled']['mare'] * 100:.1f} %; fitted on one folder, tested on the other: "
        + ", ".join(f"{k} {v['mare'] * 100:.1f} %" for k, v in pace["cross"].items()) + ".",
        "# Nuclei must come within 15 dB of the local peak, so reduced syllables drop out: "
        + ", ".join(f"{k} {v['nuclei_per_syllable']:.2f}" for k, v in pace["folders"].items())
        + " nuclei per syllable, ~1 per word.",
        f"# On this scale the real call's agent talks at a median {np.median(report['call']['agent']['wpm']):.0f} wpm "
        f"(utterances {min(report['call']['agent']['wpm'])}-{max(report['call']['agent']['wpm'])}).",
        "",
        "weights:",
        *[f"  {k}: {f(v)}" for k, v in cal.weights.items()],
        f"intercept: {f(cal.intercept)}",
        "population:",
        *[f"  {k}: {{mean: {f(m)}, sd: {f(s)}}}" for k, (m, s) in cal.population.items()],
        "min_scale:",
        *[f"  {k}: {f(v)}" for k, v in cal.min_scale.items()],
        "own_baseline:",
        f"  half_weight_speech_s: {f(cal.own_half_s)}",
        f"  max_weight: {f(cal.max_own_weight)}",
        "# The speech gate (coach.voice.Gate says why each value): on the real contact-centre call",
        "# speech is -24..-13 dBFS and 30-56 dB over the floor, noise bursts -60..-51 dBFS at 7-16 dB,",
        "# tones have a 0.02-0.12 st pitch range, the agent's leak arrives 20-30 dB under the caller.",
        f"# That call through the tracker: caller {report['call']['customer']['speech']} of "
        f"{report['call']['customer']['spurts']} talk spurts kept, agent {report['call']['agent']['speech']} of "
        f"{report['call']['agent']['spurts']}.",
        "gate:",
        f"  min_speech_s: {f(cal.gate.min_speech_s)}",
        f"  min_snr_db: {f(cal.gate.min_snr_db)}",
        f"  min_loudness_db: {f(cal.gate.min_loudness_db)}",
        f"  min_range_st: {f(cal.gate.min_range_st)}",
        f"  max_below_own_db: {f(cal.gate.max_below_own_db)}",
        "pace:",
        f"  syllables_per_word: {f(cal.syllables_per_word)}",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--write", action="store_true", help=f"write {CONFIG_OUT.relative_to(ROOT)}")
    args = ap.parse_args(argv)

    f = fit()
    h = heldout_auc(f)
    pace = pace_report()
    cal = dataclasses.replace(f.calibration, syllables_per_word=round(pace["pooled"]["spw"], 3))
    levels = call_report(cal)
    report = {"heldout": h, "pace": pace, "gain_db": f.gain_db, "call": levels}

    print(f"clips usable: {len(f.clips)} (tuning {sum(c.tuning for c in f.clips)}), corpus gain {f.gain_db:+.1f} dB")
    print("weights:", {k: round(v, 3) for k, v in cal.weights.items()}, "intercept", round(cal.intercept, 3))
    print("population:", {k: (round(m, 2), round(s, 2)) for k, (m, s) in cal.population.items()})
    print("min_scale:", {k: round(v, 3) for k, v in cal.min_scale.items()})
    print(f"held-out AUC {h['auc']:.3f} (cold start {h['auc_cold_start']:.3f}); per speaker "
          + ", ".join(f"{k} {v:.3f}" for k, v in h["per_speaker"].items())
          + f"; n angry {h['n_angry']} neutral {h['n_neutral']}; matched words angry>neutral "
          f"{h['matched_words'][0]}/{h['matched_words'][1]}")
    print("held-out per-feature AUC:", {k: round(v, 3) for k, v in h["per_feature_auc"].items()})
    print("mean arousal held-out:", {k: round(v, 3) for k, v in h["mean_arousal"].items()})
    print("angry - neutral (all words, medians):")
    for sp, d in feature_differences().items():
        print(f"  {sp}: loudness {d['loudness_db']:+.1f} dB, pitch {d['pitch_hz']:+.0f} Hz "
              f"(neutral {d['neutral_pitch_hz']:.0f} Hz), range {d['pitch_range_st']:+.2f} st "
              f"(x{d['pitch_range_ratio']:.1f}), rate {d['rate_sps']:+.2f} syll/s")
    for fo, d in pace["folders"].items():
        print(f"pace {fo}: {d['files']} files, {d['words']} words, ~{d['syllables']} syllables, "
              f"{d['nuclei']:.0f} nuclei ({d['nuclei_per_syllable']:.2f} per syllable), ref wpm {d['ref_wpm']}")
    for k, d in pace["cross"].items():
        print(f"pace {k}: spw {d['spw']:.3f} -> mean abs error {d['mare'] * 100:.1f} %, "
              f"max {d['max'] * 100:.1f} %, per file {d['per_file']}")
    p = pace["pooled"]
    print(f"pace pooled: spw {p['spw']:.3f} -> mean abs error {p['mare'] * 100:.1f} %, max {p['max'] * 100:.1f} %")
    for side, d in levels.items():
        print(f"real call {side}: {d}")
    if args.write:
        CONFIG_OUT.write_text(yaml_text(cal, report), encoding="utf-8")
        print(f"wrote {CONFIG_OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
