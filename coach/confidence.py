"""Calibrated word confidence: a recogniser's raw word score -> P(the word is right).

Why: the engines' own scores do not mean what the coach needs them to mean.
PocketSphinx's lattice posterior barely drops on 8 kHz phone audio while its word
error rate doubles, and Vosk gives ~1.0 to nearly every word, even on speech in a
language its model does not know. A gate such as "drop words below 0.5" is only
meaningful when 0.5 means "right half the time".

So each (engine, band) pair has a small monotone table of (raw, p) knots, fitted by
isotonic regression (pool-adjacent-violators over a few quantile bins of the raw
score) on decodes whose reference transcript is known; :func:`calibrate` interpolates
it linearly, flat beyond the end knots, and clamps to [0, 1]. ``band`` is ``"wide"``
(real energy above 4 kHz) or ``"narrow"`` (telephone audio, upsampled; see
:func:`band_of`). The tables ship in ``coach/configs/confidence.yaml`` (found with
:func:`coach.resources.locate`, so a user may override them) and are loaded once, on
first use; importing this module does no work. ``scripts/calibrate_confidence.py``
refits them and prints the evidence.

The fitting helpers (:func:`fit_table`, :func:`label_words`, :func:`ece`) are plain
numpy so that the script and the tests use the very code that made the tables.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .errors import ConfigError

CONFIG = "configs/confidence.yaml"
ENGINES: tuple[str, ...] = ("pocketsphinx", "vosk")
BANDS: tuple[str, ...] = ("wide", "narrow")

# Below this share of spectral energy over 4 kHz a stretch of audio is taken as
# narrowband (phone audio upsampled from 8 kHz). Measured on the read_speech corpus:
# wideband files 0.4-44 %, the same files through 8 kHz and back 0.01-0.14 %
# (the resampler's transition band).
NARROWBAND_RATIO = 0.002


def band_of(highband_ratio: float, sample_rate: int = 16000) -> str:
    """``"narrow"`` for audio with (almost) no energy above 4 kHz, else ``"wide"``."""
    if sample_rate <= 8000 or highband_ratio < NARROWBAND_RATIO:
        return "narrow"
    return "wide"


# --------------------------------------------------------------------------- the map


@dataclass(frozen=True)
class Table:
    """A monotone piecewise-linear map from raw score to probability.

    ``raw`` strictly increasing, ``p`` non-decreasing, both within [0, 1].
    """

    raw: tuple[float, ...]
    p: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.raw or len(self.raw) != len(self.p):
            raise ValueError("a table needs one p per raw knot and at least one knot")
        if any(not (0.0 <= v <= 1.0) or math.isnan(v) for v in (*self.raw, *self.p)):
            raise ValueError("table knots must lie within [0, 1]")
        if any(b <= a for a, b in zip(self.raw, self.raw[1:])):
            raise ValueError("table raw knots must be strictly increasing")
        if any(b < a for a, b in zip(self.p, self.p[1:])):
            raise ValueError("table probabilities must not decrease (the map is monotone)")

    def __call__(self, raw: float | np.ndarray) -> float | np.ndarray:
        x = np.clip(np.nan_to_num(np.asarray(raw, dtype=np.float64), nan=0.0), 0.0, 1.0)
        y = np.clip(np.interp(x, self.raw, self.p), 0.0, 1.0)
        return float(y) if y.ndim == 0 else y


@dataclass(frozen=True)
class Calibration:
    """One :class:`Table` per (engine, band), as read from the YAML."""

    tables: Mapping[tuple[str, str], Table]
    source: str = ""

    def calibrate(self, engine: str, band: str, raw: float) -> float:
        try:
            table = self.tables[(engine, band)]
        except KeyError:
            known = ", ".join(f"{e}/{b}" for e, b in sorted(self.tables))
            raise ValueError(f"no confidence table for engine {engine!r}, band {band!r} (known: {known})") from None
        return float(table(raw))


def parse_calibration(data: object, where: str) -> Calibration:
    """Validate the YAML document: ``tables: {engine: {band: {raw: [...], p: [...]}}}``."""
    fix = f"restore the shipped copy of {CONFIG} or refit it with scripts/calibrate_confidence.py"
    if not isinstance(data, dict) or not isinstance(data.get("tables"), dict):
        raise ConfigError(f"{where} has no 'tables' mapping", fix)
    tables: dict[tuple[str, str], Table] = {}
    for engine in ENGINES:
        per_band = data["tables"].get(engine)
        if not isinstance(per_band, dict):
            raise ConfigError(f"{where} has no table for engine {engine!r}", fix)
        for band in BANDS:
            t = per_band.get(band)
            if not isinstance(t, dict) or not isinstance(t.get("raw"), list) or not isinstance(t.get("p"), list):
                raise ConfigError(f"{where}: tables.{engine}.{band} needs 'raw' and 'p' lists", fix)
            try:
                tables[(engine, band)] = Table(tuple(float(v) for v in t["raw"]), tuple(float(v) for v in t["p"]))
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"{where}: tables.{engine}.{band}: {exc}", fix) from None
    return Calibration(tables, where)


def load_calibration(path: str | Path | None = None) -> Calibration:
    """Read and validate a calibration file (default: the shipped/overridden one)."""
    from .resources import locate
    from .safeio import load_yaml

    p = Path(path) if path is not None else locate(CONFIG)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {p} ({exc.strerror or exc})", "check the file's path and permissions") from None
    return parse_calibration(load_yaml(text, where=str(p)), str(p))


@functools.lru_cache(maxsize=1)
def default_calibration() -> Calibration:
    """The tables in use, loaded on first call and then kept for the process."""
    return load_calibration()


def calibrate(engine: str, band: str, raw: float) -> float:
    """P(word is right) for an ``engine`` word with raw score ``raw`` on ``band`` audio."""
    return default_calibration().calibrate(engine, band, raw)


# --------------------------------------------------------------------------- fitting


def pav(y: Sequence[float], w: Sequence[float] | None = None) -> np.ndarray:
    """Pool-adjacent-violators: the non-decreasing sequence closest to ``y`` in
    weighted least squares (the isotonic regression of ``y`` on its order)."""
    yv = np.asarray(y, dtype=np.float64)
    wv = np.ones_like(yv) if w is None else np.asarray(w, dtype=np.float64)
    means: list[float] = []
    weights: list[float] = []
    sizes: list[int] = []
    for v, wt in zip(yv, wv):
        means.append(float(v))
        weights.append(float(wt))
        sizes.append(1)
        while len(means) > 1 and means[-2] > means[-1]:
            m2, w2, s2 = means.pop(), weights.pop(), sizes.pop()
            wsum = weights[-1] + w2
            means[-1] = (means[-1] * weights[-1] + m2 * w2) / wsum if wsum > 0 else (means[-1] + m2) / 2
            weights[-1] = wsum
            sizes[-1] += s2
    return np.repeat(np.asarray(means), sizes)


def fit_table(raw: Sequence[float], correct: Sequence[bool], bins: int = 6, min_per_bin: int = 15,
              weights: Sequence[float] | None = None, prior: float = 1.0) -> Table:
    """Isotonic map from ``raw`` to P(correct), over at most ``bins`` quantile bins.

    Each bin holds at least ``min_per_bin`` words (fewer bins for small samples); PAV
    pools bins that violate monotonicity; each pooled block becomes one knot at its
    weighted mean raw score with probability ``(right + prior/2) / (n + prior)`` so
    that a block of 12 right words reads 0.96, not a certain 1.0. ``weights`` lets a
    caller balance data sets of very different sizes.
    """
    x = np.clip(np.asarray(raw, dtype=np.float64), 0.0, 1.0)
    y = np.asarray(correct, dtype=np.float64)
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=np.float64)
    if len(x) == 0:
        raise ValueError("no words to fit")
    order = np.argsort(x, kind="stable")
    x, y, w = x[order], y[order], w[order]
    n_bins = max(1, min(bins, len(x) // max(1, min_per_bin)))
    # Cut at quantiles of the (weighted) raw scores, never inside a run of equal scores
    # (Vosk gives exactly 1.0 to most words: they must share one bin).
    cw = np.cumsum(w) / w.sum()
    edges = [0]
    for q in np.linspace(0, 1, n_bins + 1)[1:-1]:
        i = int(np.searchsorted(cw, q))
        while 0 < i < len(x) and x[i] == x[i - 1]:
            i += 1
        if edges[-1] < i < len(x):
            edges.append(i)
    edges.append(len(x))
    bx, by, bw = [], [], []
    for a, b in zip(edges, edges[1:]):
        if b > a:
            ww = w[a:b]
            bx.append(float(np.dot(x[a:b], ww) / ww.sum()))
            by.append(float(np.dot(y[a:b], ww) / ww.sum()))
            bw.append(float(ww.sum()))
    fitted = pav(by, bw)
    knots_x: list[float] = []
    knots_p: list[float] = []
    i = 0
    while i < len(fitted):  # one knot per pooled block
        j = i
        while j + 1 < len(fitted) and fitted[j + 1] == fitted[i]:
            j += 1
        ws = float(sum(bw[i:j + 1]))
        kx = float(np.dot(bx[i:j + 1], bw[i:j + 1]) / ws)
        kp = (fitted[i] * ws + prior / 2) / (ws + prior)
        if knots_x and kx <= knots_x[-1]:
            kx = knots_x[-1] + 1e-6
        knots_x.append(round(min(kx, 1.0), 6))
        knots_p.append(round(float(kp), 4))
        i = j + 1
    for k in range(1, len(knots_p)):  # the prior can only shrink towards 0.5; keep monotone
        knots_p[k] = max(knots_p[k], knots_p[k - 1])
    return Table(tuple(knots_x), tuple(knots_p))


def ece(p: Sequence[float], correct: Sequence[bool], bins: int = 10) -> float:
    """Expected calibration error: |accuracy - mean confidence| over equal-width bins,
    weighted by the share of words in each bin (0 is perfectly calibrated)."""
    pv = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)
    yv = np.asarray(correct, dtype=np.float64)
    if len(pv) == 0:
        return float("nan")
    idx = np.minimum((pv * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            total += m.sum() * abs(float(yv[m].mean()) - float(pv[m].mean()))
    return total / len(pv)


def align(ref: Sequence[str], hyp: Sequence[str]) -> list[tuple[int | None, int | None]]:
    """Levenshtein alignment of two token sequences: (ref index, hyp index) pairs, with
    None for an insertion or deletion. Ties prefer a match/substitution."""
    n, m = len(ref), len(hyp)
    d = np.zeros((n + 1, m + 1), dtype=np.int32)
    d[:, 0] = np.arange(n + 1)
    d[0, :] = np.arange(m + 1)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            d[i, j] = min(d[i - 1, j - 1] + (ref[i - 1] != hyp[j - 1]), d[i - 1, j] + 1, d[i, j - 1] + 1)
    out: list[tuple[int | None, int | None]] = []
    i, j = n, m
    while i > 0 or j > 0:
        if i > 0 and j > 0 and d[i, j] == d[i - 1, j - 1] + (ref[i - 1] != hyp[j - 1]):
            out.append((i - 1, j - 1))
            i, j = i - 1, j - 1
        elif j > 0 and d[i, j] == d[i, j - 1] + 1:
            out.append((None, j - 1))
            j -= 1
        else:
            out.append((i - 1, None))
            i -= 1
    return out[::-1]


def label_words(ref: Sequence[str], hyp: Sequence[str]) -> list[bool]:
    """For each hypothesis word: is it aligned to an identical reference word?"""
    ok = [False] * len(hyp)
    for i, j in align(ref, hyp):
        if i is not None and j is not None and ref[i] == hyp[j]:
            ok[j] = True
    return ok


def label_words_by_char(ref: str, hyp: Sequence[str]) -> list[bool]:
    """Like :func:`label_words` but aligned character by character, spaces ignored: a
    hypothesis word is right when every one of its characters matches the reference.
    For Korean, whose recognisers split words (eojeol) differently from the text."""
    r = [c for c in ref if not c.isspace()]
    chars: list[str] = []
    owner: list[int] = []
    for k, w in enumerate(hyp):
        for c in w:
            if not c.isspace():
                chars.append(c)
                owner.append(k)
    good = [True] * len(hyp)
    seen = [False] * len(hyp)
    for i, j in align(r, chars):
        if j is None:
            continue
        seen[owner[j]] = True
        if i is None or r[i] != chars[j]:
            good[owner[j]] = False
    return [g and s for g, s in zip(good, seen)]


__all__ = [
    "BANDS", "CONFIG", "Calibration", "ENGINES", "NARROWBAND_RATIO", "Table", "align", "band_of", "calibrate",
    "default_calibration", "ece", "fit_table", "label_words", "label_words_by_char", "load_calibration",
    "parse_calibration", "pav",
]
