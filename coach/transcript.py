"""Transcripts made elsewhere, replayed through the same coach as audio.

Format (documented in README.md)::

    {"segments": [{"speaker": "agent" | "customer", "start": 1.6, "end": 4.3,
                   "text": "...", "words": [{"word": "...", "start": 1.6, "end": 1.9}]}]}

``words`` (and a word's ``conf``) are optional; unknown fields are ignored.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import TranscriptError
from .events import Speaker, Utterance, Word

_FIX = "see 'Transcript format' in README.md"


def _num(seg: dict, key: str, where: str) -> float:
    v = seg.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or v < 0:
        raise TranscriptError(f"{where}: '{key}' must be a non-negative number of seconds, got {v!r}", _FIX)
    return float(v)


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
            raise TranscriptError(f"{where}: 'speaker' must be \"agent\" or \"customer\", got {seg.get('speaker')!r}", _FIX) from None
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
            conf = w.get("conf", 1.0)
            if not isinstance(conf, (int, float)) or not 0.0 <= conf <= 1.0:
                raise TranscriptError(f"{ww}: 'conf' must be between 0 and 1", _FIX)
            words.append(Word(w["word"], _num(w, "start", ww), _num(w, "end", ww), float(conf)))
        if not text.strip():
            continue
        conf = sum(w.conf for w in words) / len(words) if words else 1.0
        out.append(Utterance(speaker, start, end, text.strip(), tuple(words), conf))
    out.sort(key=lambda u: (u.end, u.start))
    return out


def load_transcript(path: str | Path) -> list[Utterance]:
    p = Path(path)
    if not p.is_file():
        raise TranscriptError(f"transcript {p} does not exist", "check the path")
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise TranscriptError(f"transcript {p} is not UTF-8 text", _FIX) from None
    except json.JSONDecodeError as e:
        raise TranscriptError(f"transcript {p} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})", _FIX) from None
    return parse_transcript(raw, str(p))


def looks_like_transcript(path: str | Path) -> bool:
    """A .json file is a transcript; everything else is treated as audio."""
    return Path(path).suffix.lower() == ".json"
