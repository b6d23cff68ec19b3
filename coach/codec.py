"""The one codec for events files (``--events OUT.jsonl``): writer, reader and schema.

Why one codec: the live sink, the archive, the reports and the tests must read back
exactly what was written. One module owns both directions, so a field cannot be renamed
on one side only, and ``encode(decode(line)) == line`` holds byte for byte (rounding is
applied on encode, so decoding a file and encoding it again changes nothing).

Schema ``coach.events`` version 1. A file is UTF-8 JSON lines, each ending in ``\\n``.
The first line is the header; the other lines are events in call order. Every line has
``type``, ``t`` (seconds of call time) and ``wall`` (wall-clock seconds since the
session started, so paced replay and live runs can measure their lag as ``wall - t``).
Times and scores are rounded on encode: times and confidences to 3 decimals,
probabilities to 4, dB and words per minute to 1.

* ``header``: ``schema`` (``"coach.events"``), ``version`` (1), ``t`` and ``wall``
  (both 0.0), then free metadata such as ``coach_version``, ``call``, ``engine``,
  ``started_at`` (ISO time).
* ``utterance``: ``speaker``, ``start``, ``end`` (``t`` equals ``end``), ``text``,
  ``confidence`` (mean word confidence), ``words`` (list of ``{word, start, end,
  conf}``), optional ``loudness_db`` (dBFS), optional ``voice`` (``loudness_db``,
  ``speech_s``, ``snr_db``, ``pitch_hz``, ``pitch_range_st``, ``rate_sps``, and for the
  customer only ``arousal``); for classified (customer) utterances also
  ``level`` (the most probable level of the written ``escalation``), ``escalation``
  (probability per level) and ``sentiment`` (probability per sentiment), all three
  together or none.
* ``partial``: ``speaker``, ``text`` (words so far of an unfinished utterance).
* ``trajectory``: ``speaker``, ``escalation`` (smoothed expected level 0..4),
  ``sentiment`` (-1..1), ``state`` (level after hysteresis), ``trend`` (``rising``,
  ``steady``, ``falling``), ``peak`` (worst state so far), ``risk`` (forecast of
  angry-or-worse), optional ``words_per_minute`` and ``loudness_rel_db``,
  ``words_trusted``, optional ``word_trust``, ``arousal`` and ``driver``.
* ``prompt_open`` / ``prompt_close``: ``speaker``, ``prompt`` (its id), ``text``,
  ``priority`` (integer), ``severity``, ``reason`` (for a close: what closed it).
* ``call_end``: no other field (it belongs to no speaker).

Non-finite numbers (NaN, infinities) are never written: they become ``null``, and a
``null`` in a number field reads back as NaN (so infinities come back as NaN). An
optional field that is absent reads back as ``None``. Audio chunks and unscored
utterances are stage-internal and not written (``encode`` returns ``None``). Unknown
extra fields are ignored on read, so later versions may add fields; an unknown ``type``
or a header ``version`` newer than :data:`SCHEMA_VERSION` is refused.
"""
from __future__ import annotations

import json
import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from .errors import CoachError
from .events import (
    LEVELS,
    SENTIMENTS,
    CallEnd,
    Event,
    Level,
    Partial,
    Prompt,
    ScoredUtterance,
    Scores,
    Speaker,
    TrajectoryState,
    Trend,
    Utterance,
    Voice,
    Word,
)

SCHEMA = "coach.events"
SCHEMA_VERSION = 1

_HEADER_KEYS = ("type", "schema", "version", "t", "wall")
_FIX_FILE = "write the file again with --events, or repair that line"


class EventsError(CoachError):
    """An events file or event object that does not follow the ``coach.events`` schema."""


@dataclass(frozen=True)
class EventsFile:
    """A whole events file: its header and every event with its wall time."""

    header: dict
    events: tuple[tuple[Event, float], ...]


# ----------------------------------------------------------------------------- encode


def _num(x: Any, ndigits: int) -> float | None:
    """A rounded float, or None for a non-finite value (strict JSON has no NaN)."""
    x = float(x)
    return round(x, ndigits) if math.isfinite(x) else None


def _probs(m: Mapping[str, float]) -> dict[str, float | None]:
    return {str(k): _num(v, 4) for k, v in m.items()}


def _level_of(esc: Mapping[str, float | None]) -> str | None:
    """The most probable level of the *written* probabilities (first wins on ties).

    Computed after rounding so that the ``level`` on a line always agrees with the
    ``escalation`` beside it, which is what makes decode-then-encode byte-identical.
    """
    best: str | None = None
    for k, v in esc.items():
        if v is not None and (best is None or v > esc[best]):  # type: ignore[operator]
            best = k
    return best


def _sanitize(x: Any) -> Any:
    """Header metadata with non-finite floats replaced by None, recursively."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, Mapping):
        return {str(k): _sanitize(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_sanitize(v) for v in x]
    return x


def header(meta: Mapping[str, Any]) -> dict:
    """The first line of every events file: schema, version and the session's metadata."""
    clash = sorted(set(meta) & set(_HEADER_KEYS))
    if clash:
        raise ValueError(f"header metadata may not set reserved keys {clash}")
    return {"type": "header", "schema": SCHEMA, "version": SCHEMA_VERSION, "t": 0.0, "wall": 0.0,
            **_sanitize(dict(meta))}


def dumps_header(meta: Mapping[str, Any]) -> str:
    """The header as one JSON line with its trailing newline."""
    return _json(header(meta))


def encode(ev: Event, wall: float) -> dict | None:
    """The JSON object of one event, or None for events that are not written.

    ``wall`` is wall-clock seconds since the session started.
    """
    w = _num(wall, 3)
    if isinstance(ev, ScoredUtterance):
        u = ev.utterance
        out: dict = {
            "type": "utterance",
            "t": _num(u.end, 3),
            "wall": w,
            "speaker": Speaker(u.speaker).value,
            "start": _num(u.start, 3),
            "end": _num(u.end, 3),
            "text": u.text,
            "confidence": _num(u.confidence, 3),
            "words": [
                {"word": x.word, "start": _num(x.start, 3), "end": _num(x.end, 3), "conf": _num(x.conf, 3)}
                for x in u.words
            ],
        }
        if u.loudness_db is not None:
            out["loudness_db"] = _num(u.loudness_db, 1)
        if u.voice is not None:
            out["voice"] = {k: _num(getattr(u.voice, k), nd) for k, nd in _VOICE_FIELDS
                            if getattr(u.voice, k) is not None}
        if ev.scores is not None:
            esc = _probs(ev.scores.escalation)
            out["level"] = ev.scores.level.label if ev.scores.decided is not None else _level_of(esc)
            out["escalation"] = esc
            out["sentiment"] = _probs(ev.scores.sentiment)
        return out
    if isinstance(ev, Partial):
        out = {"type": "partial", "t": _num(ev.t, 3), "wall": w, "speaker": Speaker(ev.speaker).value,
               "text": ev.text}
        if ev.arousal is not None:
            out["arousal"] = _num(ev.arousal, 3)
        return out
    if isinstance(ev, TrajectoryState):
        out = {
            "type": "trajectory",
            "t": _num(ev.t, 3),
            "wall": w,
            "speaker": Speaker(ev.speaker).value,
            "escalation": _num(ev.escalation, 3),
            "sentiment": _num(ev.sentiment, 3),
            "state": Level(ev.state).label,
            "trend": Trend(ev.trend).value,
            "peak": Level(ev.peak).label,
            "risk": _num(ev.risk, 3),
        }
        if ev.words_per_minute is not None:
            out["words_per_minute"] = _num(ev.words_per_minute, 1)
        if ev.loudness_rel_db is not None:
            out["loudness_rel_db"] = _num(ev.loudness_rel_db, 1)
        if ev.arousal is not None:
            out["arousal"] = _num(ev.arousal, 3)
        if ev.word_trust is not None:
            out["word_trust"] = _num(ev.word_trust, 3)
        out["words_trusted"] = bool(ev.words_trusted)
        if ev.driver:
            out["driver"] = ev.driver
        return out
    if isinstance(ev, Prompt):
        return {
            "type": "prompt_open" if ev.opened else "prompt_close",
            "t": _num(ev.t, 3),
            "wall": w,
            "speaker": Speaker(ev.speaker).value,
            "prompt": ev.prompt,
            "text": ev.text,
            "priority": int(ev.priority),
            "severity": ev.severity,
            "reason": ev.reason,
        }
    if isinstance(ev, CallEnd):
        return {"type": "call_end", "t": _num(ev.t, 3), "wall": w}
    return None


def _json(obj: Mapping[str, Any]) -> str:
    return json.dumps(obj, allow_nan=False, ensure_ascii=False) + "\n"


def dumps(ev: Event, wall: float) -> str | None:
    """One JSON line (with its trailing newline) for ``ev``, or None if it is not written."""
    obj = encode(ev, wall)
    return None if obj is None else _json(obj)


# ----------------------------------------------------------------------------- decode


def _bad(cause: str, fix: str = "write it with coach.codec.encode") -> EventsError:
    return EventsError(cause, fix)


def _field(obj: Mapping, key: str) -> Any:
    try:
        return obj[key]
    except KeyError:
        raise _bad(f"{obj.get('type', 'event')!s} without field {key!r}") from None


def _float(obj: Mapping, key: str) -> float:
    """A number field; null (a non-finite value on encode) reads back as NaN."""
    v = _field(obj, key)
    if v is None:
        return math.nan
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _bad(f"field {key!r} is {type(v).__name__}, not a number")
    return float(v)


def _opt_float(obj: Mapping, key: str) -> float | None:
    return _float(obj, key) if key in obj else None


def _int(obj: Mapping, key: str) -> int:
    v = _field(obj, key)
    if isinstance(v, bool) or not isinstance(v, int):
        raise _bad(f"field {key!r} is {type(v).__name__}, not an integer")
    return v


def _str(obj: Mapping, key: str) -> str:
    v = _field(obj, key)
    if not isinstance(v, str):
        raise _bad(f"field {key!r} is {type(v).__name__}, not a string")
    return v


def _enum(obj: Mapping, key: str, parse: Callable[[str], Any], valid: tuple[str, ...]) -> Any:
    v = _str(obj, key)
    if v not in valid:
        raise _bad(f"field {key!r} is {v!r}, not one of {', '.join(valid)}")
    return parse(v)


_SPEAKERS = tuple(s.value for s in Speaker)
_TRENDS = tuple(t.value for t in Trend)


def _speaker(obj: Mapping) -> Speaker:
    return _enum(obj, "speaker", Speaker, _SPEAKERS)


def _probs_in(obj: Mapping, key: str, valid: tuple[str, ...]) -> dict[str, float]:
    m = _field(obj, key)
    if not isinstance(m, Mapping) or not m:
        raise _bad(f"field {key!r} is not a non-empty object of probabilities")
    out: dict[str, float] = {}
    for k, v in m.items():
        if k not in valid:
            raise _bad(f"field {key!r} has unknown key {k!r} (expected {', '.join(valid)})")
        out[k] = _float(m, k)
    return out


def _words(obj: Mapping) -> tuple[Word, ...]:
    ws = _field(obj, "words")
    if not isinstance(ws, list):
        raise _bad("field 'words' is not a list")
    out = []
    for w in ws:
        if not isinstance(w, Mapping):
            raise _bad("an entry of 'words' is not an object")
        out.append(Word(_str(w, "word"), _float(w, "start"), _float(w, "end"), _float(w, "conf")))
    return tuple(out)


def _scores(obj: Mapping) -> Scores | None:
    present = [k for k in ("level", "escalation", "sentiment") if k in obj]
    if not present:
        return None
    if len(present) != 3:
        raise _bad(f"utterance has {', '.join(present)} but not all of level, escalation, sentiment")
    esc = _probs_in(obj, "escalation", LEVELS)
    sen = _probs_in(obj, "sentiment", SENTIMENTS)
    level = obj["level"]
    finite = {k: (v if math.isfinite(v) else None) for k, v in esc.items()}
    expected = _level_of(finite)
    if level == expected:
        return Scores(escalation=esc, sentiment=sen)
    # The model's decision rule (coach.events.decide_level) may choose abusive or
    # threatening below the argmax, by its tuned thresholds, or otherwise the most
    # likely of calm/frustrated/angry; any other level contradicts the probabilities.
    lower = _level_of({k: finite[k] for k in LEVELS[:3] if k in finite})
    if level not in ("abusive", "threatening", lower):
        raise _bad(f"utterance level {level!r} disagrees with its escalation (most probable: {expected!r}, "
                   f"or abusive/threatening by the model's thresholds)")
    return Scores(escalation=esc, sentiment=sen, decided=level)


def _utterance(obj: Mapping) -> Event:
    t, end = _float(obj, "t"), _float(obj, "end")
    if t != end and not (math.isnan(t) and math.isnan(end)):
        raise _bad(f"utterance t {t} differs from its end {end}", "an utterance's t is its end time")
    u = Utterance(
        speaker=_speaker(obj),
        start=_float(obj, "start"),
        end=_float(obj, "end"),
        text=_str(obj, "text"),
        words=_words(obj),
        confidence=_float(obj, "confidence"),
        loudness_db=_opt_float(obj, "loudness_db"),
        voice=_voice(obj),
    )
    return ScoredUtterance(u, _scores(obj))


# Voice fields written (name, decimals); loudness_db, speech_s and snr_db are required.
_VOICE_FIELDS = (("loudness_db", 1), ("speech_s", 2), ("snr_db", 1), ("pitch_hz", 1), ("pitch_range_st", 2),
                 ("rate_sps", 2), ("arousal", 3))


def _voice(obj: Mapping) -> Voice | None:
    v = obj.get("voice")
    if v is None:
        return None
    if not isinstance(v, Mapping):
        raise _bad("utterance voice must be an object")
    return Voice(loudness_db=_float(v, "loudness_db"), speech_s=_float(v, "speech_s"), snr_db=_float(v, "snr_db"),
                 pitch_hz=_opt_float(v, "pitch_hz"), pitch_range_st=_opt_float(v, "pitch_range_st"),
                 rate_sps=_opt_float(v, "rate_sps"), arousal=_opt_float(v, "arousal"))


def _partial(obj: Mapping) -> Event:
    arousal = _opt_float(obj, "arousal")
    speaker = _speaker(obj)
    if arousal is not None and (not 0.0 <= arousal <= 1.0 or speaker is not Speaker.CUSTOMER):
        raise _bad(f"partial arousal {arousal} is outside 0..1 or not the customer's")
    return Partial(speaker=speaker, t=_float(obj, "t"), text=_str(obj, "text"), arousal=arousal)


def _trajectory(obj: Mapping) -> Event:
    return TrajectoryState(
        speaker=_speaker(obj),
        t=_float(obj, "t"),
        escalation=_float(obj, "escalation"),
        sentiment=_float(obj, "sentiment"),
        state=_enum(obj, "state", Level.parse, LEVELS),
        trend=_enum(obj, "trend", Trend, _TRENDS),
        peak=_enum(obj, "peak", Level.parse, LEVELS),
        words_per_minute=_opt_float(obj, "words_per_minute"),
        loudness_rel_db=_opt_float(obj, "loudness_rel_db"),
        risk=_float(obj, "risk"),
        arousal=_opt_float(obj, "arousal"),
        words_trusted=_opt_bool(obj, "words_trusted", True),
        word_trust=_opt_float(obj, "word_trust"),
        driver=_opt_str(obj, "driver", ""),
    )


def _opt_bool(obj: Mapping, key: str, default: bool) -> bool:
    v = obj.get(key, default)
    if not isinstance(v, bool):
        raise _bad(f"{obj.get('type', 'event')} field {key!r} must be true or false, got {v!r}")
    return v


def _opt_str(obj: Mapping, key: str, default: str) -> str:
    return _str(obj, key) if key in obj else default


def _prompt(opened: bool) -> Callable[[Mapping], Event]:
    def make(obj: Mapping) -> Event:
        return Prompt(
            prompt=_str(obj, "prompt"),
            t=_float(obj, "t"),
            opened=opened,
            text=_str(obj, "text"),
            priority=_int(obj, "priority"),
            severity=_str(obj, "severity"),
            reason=_str(obj, "reason"),
            speaker=_speaker(obj),
        )
    return make


def _call_end(obj: Mapping) -> Event:
    return CallEnd(t=_float(obj, "t"))


_DECODERS: dict[str, Callable[[Mapping], Event]] = {
    "utterance": _utterance,
    "partial": _partial,
    "trajectory": _trajectory,
    "prompt_open": _prompt(True),
    "prompt_close": _prompt(False),
    "call_end": _call_end,
}


def decode(obj: Mapping) -> tuple[Event, float]:
    """The event and its wall time from one decoded JSON object (inverse of :func:`encode`)."""
    if not isinstance(obj, Mapping):
        raise _bad(f"an event must be a JSON object, not {type(obj).__name__}")
    kind = obj.get("type")
    make = _DECODERS.get(kind) if isinstance(kind, str) else None
    if make is None:
        raise _bad(f"unknown event type {kind!r}",
                   f"expected one of {', '.join(_DECODERS)}; a newer coach may have written it")
    ev = make(obj)
    _float(obj, "t")  # every line has a numeric t, even where the event derives it (utterance: end)
    return ev, _float(obj, "wall")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(s: str) -> float:
    x = float(s)
    if not math.isfinite(x):
        raise ValueError(f"number {s} overflows to infinity")
    return x


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _parse(line: str) -> Any:
    """Strict JSON: no NaN/Infinity, no numbers that overflow, no duplicate keys."""
    try:
        return json.loads(line, parse_constant=_reject_constant, parse_float=_finite_float,
                          object_pairs_hook=_unique_keys)
    except RecursionError:
        raise _bad("not valid JSON (nested too deeply)", _FIX_FILE) from None
    except ValueError as e:  # includes json.JSONDecodeError
        msg = e.msg if isinstance(e, json.JSONDecodeError) else str(e)
        raise _bad(f"not valid JSON ({msg})", _FIX_FILE) from None


def loads(line: str) -> tuple[Event, float]:
    """The event and its wall time from one JSON line (strict JSON)."""
    return decode(_parse(line))


# ----------------------------------------------------------------------------- reader


def _open_regular(path: Path):
    """Open ``path`` for binary reading, refusing FIFOs, devices and directories.

    Opening a FIFO would block until something writes to it, so the type is checked
    with ``os.stat`` first, and again on the open descriptor (opened non-blocking).
    """
    def not_regular() -> EventsError:
        return EventsError(f"{path} is not a regular file", "pass the path of an events .jsonl file")

    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise not_regular()
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise EventsError(f"events file {path} does not exist", "check the path") from None
    except OSError as e:
        raise EventsError(f"cannot open events file {path} ({e.strerror or e})",
                          "check the path and its permissions") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise not_regular()
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _check_header(path: Path, obj: Any) -> dict:
    where = f"{path}, line 1"
    if not isinstance(obj, dict) or obj.get("type") != "header":
        raise EventsError(f"{where}: no header (the first line must have type 'header')",
                          "this is not a coach events file, or one from before schema versions")
    if obj.get("schema") != SCHEMA:
        raise EventsError(f"{where}: schema {obj.get('schema')!r} is not {SCHEMA!r}",
                          "pass a coach events file")
    version = obj.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise EventsError(f"{where}: unsupported schema version {version!r}", "pass a coach events file")
    if version > SCHEMA_VERSION:
        raise EventsError(f"{where}: schema version {version} is newer than this coach reads ({SCHEMA_VERSION})",
                          "upgrade coach to read it")
    return obj


def _lines(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed JSON) for every line, with file:line in every error."""
    with _open_regular(path) as f:
        n = 0
        while True:
            try:
                raw = f.readline()
            except OSError as e:
                raise EventsError(f"{path}, line {n + 1}: read failed ({e.strerror or e})",
                                  "check the disk and try again") from None
            if not raw:
                if n == 0:
                    raise EventsError(f"{path} is empty", "pass an events file written by coach")
                return
            n += 1
            if not raw.endswith(b"\n"):
                raise EventsError(f"{path}, line {n}: the last line has no newline, so the file is truncated",
                                  "the writer stopped mid-line; drop that half line or write the file again")
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise EventsError(f"{path}, line {n}: not UTF-8 (byte {e.start})",
                                  "events files are UTF-8; write the file again with coach") from None
            if not text.strip():
                raise EventsError(f"{path}, line {n}: empty line", "remove it; every line is one JSON object")
            try:
                yield n, _parse(text)
            except EventsError as e:
                raise EventsError(f"{path}, line {n}: {e.cause}", e.fix) from None


def _events(path: Path, lines: Iterator[tuple[int, Any]]) -> Iterator[tuple[Event, float]]:
    for n, obj in lines:
        if isinstance(obj, dict) and obj.get("type") == "header":
            raise EventsError(f"{path}, line {n}: a second header",
                              "files were concatenated; split them at that line")
        try:
            yield decode(obj)
        except EventsError as e:
            raise EventsError(f"{path}, line {n}: {e.cause}", e.fix) from None


def _open_events(path: str | os.PathLike) -> tuple[dict, Iterator[tuple[Event, float]]]:
    p = Path(path)
    lines = _lines(p)
    _, first = next(lines)
    return _check_header(p, first), _events(p, lines)


def iter_events(path: str | os.PathLike) -> Iterator[tuple[Event, float]]:
    """Stream (event, wall) pairs from an events file after checking its header.

    Errors in later lines (including a truncated last line) are raised when reached.
    """
    _, events = _open_events(path)
    yield from events


def read_events(path: str | os.PathLike) -> EventsFile:
    """Read and check a whole events file."""
    head, events = _open_events(path)
    return EventsFile(header=head, events=tuple(events))


__all__ = [
    "SCHEMA", "SCHEMA_VERSION", "EventsError", "EventsFile", "decode", "dumps", "dumps_header",
    "encode", "header", "iter_events", "loads", "read_events",
]
