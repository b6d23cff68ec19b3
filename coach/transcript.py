"""Transcripts made elsewhere, replayed through the same coach as audio.

Format (documented in README.md)::

    {"segments": [{"speaker": "agent" | "customer", "start": 1.6, "end": 4.3,
                   "text": "...", "words": [{"word": "...", "start": 1.6, "end": 1.9}]}]}

``words`` (and a word's ``conf``) are optional; unknown fields are ignored.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from . import safeio
from .errors import TranscriptError
from .events import Speaker, Utterance, Word

_FIX = "see 'Transcript format' in README.md"
MAX_BYTES = 64 * safeio.MB  # a day of call transcript is a few MB
MAX_SECONDS = 24 * 3600.0  # call times are seconds from the call start; a call is shorter than a day
MAX_DEPTH = 64  # the format needs four levels; unknown fields may nest a little more


def _show(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 40 else r[:37] + "..."


def _num(seg: dict, key: str, where: str) -> float:
    """A call time: finite, non-negative and below a day (``1e400`` parses to inf)."""
    v = seg.get(key)
    ok = not isinstance(v, bool) and isinstance(v, (int, float))
    if ok:
        try:
            f = float(v)
        except OverflowError:
            ok = False
        else:
            ok = math.isfinite(f) and 0.0 <= f < MAX_SECONDS
    if not ok:
        raise TranscriptError(f"{where}: '{key}' must be a number of seconds in [0, {MAX_SECONDS:.0f}), got {_show(v)}",
                              _FIX)
    return f


def parse_transcript(raw: Any, source: str = "transcript") -> list[Utterance]:
    """Validate a decoded transcript and return its utterances sorted by end time."""
    if not isinstance(raw, dict) or not isinstance(raw.get("segments"), list):
        raise TranscriptError(f"{source} has no 'segments' list at the top level", _FIX)
    out: list[Utterance] = []
    for i, seg in enumerate(raw["segments"]):
        where = f"{source} segment {i + 1}"
        if not isinstance(seg, dict):
            raise TranscriptError(f"{where} is not an object", _FIX)
        try:
            speaker = Speaker(str(seg.get("speaker", "")).lower())
        except ValueError:
            raise TranscriptError(f"{where}: 'speaker' must be \"agent\" or \"customer\", got {_show(seg.get('speaker'))}",
                                  _FIX) from None
        start, end = _num(seg, "start", where), _num(seg, "end", where)
        if end < start:
            raise TranscriptError(f"{where}: 'end' ({end}) is before 'start' ({start})", _FIX)
        text = seg.get("text")
        if not isinstance(text, str):
            raise TranscriptError(f"{where}: 'text' must be a string", _FIX)
        words: list[Word] = []
        raw_words = seg.get("words") or []
        if not isinstance(raw_words, list):
            raise TranscriptError(f"{where}: 'words' must be a list", _FIX)
        for j, w in enumerate(raw_words):
            ww = f"{where} word {j + 1}"
            if not isinstance(w, dict) or not isinstance(w.get("word"), str):
                raise TranscriptError(f"{ww} needs a 'word' string", _FIX)
            try:
                conf = safeio.number(w.get("conf", 1.0), "'conf'", lo=0.0, hi=1.0)
            except ValueError as exc:
                raise TranscriptError(f"{ww}: {exc}", _FIX) from None
            words.append(Word(w["word"], _num(w, "start", ww), _num(w, "end", ww), conf))
        if not text.strip():
            continue
        conf = sum(w.conf for w in words) / len(words) if words else 1.0
        out.append(Utterance(speaker, start, end, text.strip(), tuple(words), conf))
    out.sort(key=lambda u: (u.end, u.start))
    return out


def load_transcript(path: str | Path) -> list[Utterance]:
    """Read, decode and validate a transcript file (see the module docstring for the format).

    Goes through :mod:`coach.safeio`: FIFOs, devices, folders, files over 64 MB, non-UTF-8
    bytes (a BOM is fine), NaN/Infinity, ``1e400`` and absurd nesting are one-line errors.
    """
    p = Path(path)
    text = safeio.read_text(p, what="transcript", max_bytes=MAX_BYTES, error_cls=TranscriptError,
                            fix="pass the path of a transcript .json file (see 'Transcript format' in README.md)")
    raw = safeio.load_json(text, where=f"transcript {p}", max_depth=MAX_DEPTH, error_cls=TranscriptError, fix=_FIX)
    return parse_transcript(raw, str(p))


def looks_like_transcript(path: str | Path) -> bool:
    """A .json file is a transcript; everything else is treated as audio."""
    return Path(path).suffix.lower() == ".json"
