"""The events codec: byte-identical round trips, strict JSON and a reader that fails cleanly."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from coach.codec import (
    SCHEMA,
    SCHEMA_VERSION,
    EventsFile,
    decode,
    dumps,
    dumps_header,
    encode,
    header,
    iter_events,
    loads,
    read_events,
)
from coach.errors import CoachError
from coach.events import (
    AudioChunk,
    CallEnd,
    Level,
    Partial,
    Prompt,
    ScoredUtterance,
    Scores,
    Speaker,
    TrajectoryState,
    Trend,
    Utterance,
    Word,
)

ESC = {"calm": 0.01234, "frustrated": 0.1, "angry": 0.76543, "abusive": 0.1, "threatening": 0.02223}
SEN = {"negative": 0.81111, "neutral": 0.15, "positive": 0.03889}


def _utt(scored: bool = True, loud: float | None = -23.456) -> ScoredUtterance:
    u = Utterance(
        speaker=Speaker.CUSTOMER if scored else Speaker.AGENT,
        start=1.23456,
        end=3.45678,
        text="this is ridiculous — ça suffit",
        words=(Word("this", 1.23456, 1.5, 0.98765), Word("ridiculous", 1.6, 3.45678, 0.5)),
        confidence=0.74321,
        loudness_db=loud,
    )
    return ScoredUtterance(u, Scores(ESC, SEN) if scored else None)


def _traj(**kw) -> TrajectoryState:
    base = dict(speaker=Speaker.CUSTOMER, t=3.45678, escalation=1.98765, sentiment=-0.61234,
                state=Level.FRUSTRATED, trend=Trend.RISING, peak=Level.ANGRY,
                words_per_minute=182.345, loudness_rel_db=4.567, risk=0.43219)
    base.update(kw)
    return TrajectoryState(**base)


def _open(t: float = 3.5) -> Prompt:
    return Prompt("slow_down", t, True, text="Slow down a little", priority=2, severity="warn",
                  reason="customer escalating")


def _close(t: float = 9.25) -> Prompt:
    return Prompt("slow_down", t, False, priority=2, severity="warn", reason="calmer")


EVENTS = [
    _utt(),
    _utt(scored=False, loud=None),
    Partial(Speaker.AGENT, 0.5004, "I under"),
    _traj(),
    _traj(words_per_minute=None, loudness_rel_db=None, speaker=Speaker.AGENT),
    _open(),
    _close(),
    CallEnd(12.00049),
]


def _r(x: float, n: int) -> float:
    return round(x, n)


def _rounded(ev):
    """What the events are expected to read back as: the writer rounds."""
    if isinstance(ev, ScoredUtterance):
        u = ev.utterance
        ru = Utterance(u.speaker, _r(u.start, 3), _r(u.end, 3), u.text,
                       tuple(Word(w.word, _r(w.start, 3), _r(w.end, 3), _r(w.conf, 3)) for w in u.words),
                       _r(u.confidence, 3), None if u.loudness_db is None else _r(u.loudness_db, 1))
        sc = None if ev.scores is None else Scores(
            {k: _r(v, 4) for k, v in ev.scores.escalation.items()},
            {k: _r(v, 4) for k, v in ev.scores.sentiment.items()})
        return ScoredUtterance(ru, sc)
    if isinstance(ev, Partial):
        return Partial(ev.speaker, _r(ev.t, 3), ev.text)
    if isinstance(ev, TrajectoryState):
        opt = lambda v: None if v is None else _r(v, 1)  # noqa: E731
        return TrajectoryState(ev.speaker, _r(ev.t, 3), _r(ev.escalation, 3), _r(ev.sentiment, 3), ev.state,
                               ev.trend, ev.peak, opt(ev.words_per_minute), opt(ev.loudness_rel_db),
                               _r(ev.risk, 3))
    if isinstance(ev, Prompt):
        return Prompt(ev.prompt, _r(ev.t, 3), ev.opened, ev.text, ev.priority, ev.severity, ev.reason, ev.speaker)
    if isinstance(ev, CallEnd):
        return CallEnd(_r(ev.t, 3))
    raise AssertionError(ev)


@pytest.mark.parametrize("ev", EVENTS, ids=lambda e: type(e).__name__)
def test_round_trip_is_byte_identical_and_equal_after_rounding(ev):
    line = dumps(ev, 7.123456)
    assert line is not None and line.endswith("\n") and line.count("\n") == 1
    back, wall = decode(json.loads(line))
    assert dumps(back, wall) == line
    assert back == _rounded(ev)
    assert wall == 7.123
    assert loads(line) == (back, wall)


@pytest.mark.parametrize("ev", EVENTS, ids=lambda e: type(e).__name__)
def test_every_line_has_type_t_and_wall(ev):
    obj = encode(ev, 1.0004)
    assert obj is not None
    assert list(obj)[:3] == ["type", "t", "wall"] and obj["wall"] == 1.0


def test_call_end_has_no_speaker():
    assert encode(CallEnd(2.0), 0.5) == {"type": "call_end", "t": 2.0, "wall": 0.5}
    utt = encode(_utt(), 0.0)
    assert utt["level"] == "angry" and utt["t"] == 3.457


def test_the_codec_is_the_only_serialiser():
    import coach.events
    assert not hasattr(coach.events, "event_to_json")  # one codec, both directions


def test_audio_chunks_are_not_written():
    chunk = AudioChunk(Speaker.AGENT, 0.0, np.zeros(160, dtype=np.int16), 16000)
    assert encode(chunk, 0.0) is None and dumps(chunk, 0.0) is None


def test_level_follows_the_written_probabilities_on_a_rounding_tie():
    ev = ScoredUtterance(_utt().utterance, Scores({"calm": 0.400001, "frustrated": 0.400004}, SEN))
    line = dumps(ev, 0.0)
    assert json.loads(line)["level"] == "calm"
    assert dumps(*loads(line)) == line


def test_non_finite_numbers_become_null_and_stay_strict_json():
    def strict(s: str):
        return json.loads(s, parse_constant=lambda c: pytest.fail(f"{c} in output"))

    evs = [
        _traj(escalation=math.nan, sentiment=math.inf, risk=-math.inf, words_per_minute=math.nan),
        ScoredUtterance(Utterance(Speaker.CUSTOMER, math.nan, math.inf, "x", (Word("x", math.nan, 1.0, math.inf),),
                                  confidence=math.nan, loudness_db=-math.inf),
                        Scores({"calm": math.nan, "angry": 0.5}, {"neutral": math.inf})),
        CallEnd(math.inf),
    ]
    for ev in evs:
        line = dumps(ev, math.nan)
        obj = strict(line)
        assert obj["wall"] is None
        back, wall = loads(line)
        assert math.isnan(wall)
        assert dumps(back, wall) == line  # null reads back as NaN and is written as null again
    traj = strict(dumps(evs[0], 0.0))
    assert traj["escalation"] is None and traj["sentiment"] is None and traj["risk"] is None
    assert traj["words_per_minute"] is None and "loudness_rel_db" in traj
    utt = strict(dumps(evs[1], 0.0))
    assert utt["level"] == "angry" and utt["escalation"]["calm"] is None and utt["words"][0]["conf"] is None
    assert strict(dumps_header({"x": [math.nan]}))["x"] == [None]


def test_header_first_with_schema_and_version():
    h = header({"coach_version": "1.2", "call": "a.wav", "engine": "vosk", "started_at": "2024-01-01T00:00:00"})
    assert list(h)[:5] == ["type", "schema", "version", "t", "wall"]
    assert h["type"] == "header" and h["schema"] == SCHEMA == "coach.events" and h["version"] == SCHEMA_VERSION == 1
    assert h["engine"] == "vosk"
    with pytest.raises(ValueError):
        header({"version": 2})


def _write(path: Path, lines: list[str | None]) -> Path:
    path.write_text("".join(x for x in lines if x is not None), encoding="utf-8")
    return path


def test_realistic_file_reads_back_equal(tmp_path):
    seq = [(_utt(), 3.6), (_traj(), 3.61), (_open(3.61), 3.62), (_close(9.0), 9.1), (CallEnd(12.0), 12.2)]
    p = _write(tmp_path / "call.jsonl", [dumps_header({"call": "x.wav"})] + [dumps(e, w) for e, w in seq])
    f = read_events(p)
    assert isinstance(f, EventsFile)
    assert f.header["call"] == "x.wav" and f.header["version"] == 1
    assert f.events == tuple((_rounded(e), w) for e, w in seq)
    assert tuple(iter_events(p)) == f.events
    # decode then encode reproduces the file exactly
    again = dumps_header({"call": "x.wav"}) + "".join(dumps(e, w) for e, w in f.events)
    assert again == p.read_text(encoding="utf-8")


def test_empty_events_after_header_and_unknown_fields_are_ignored(tmp_path):
    line = json.loads(dumps(_open(), 1.0))
    line["added_in_v2"] = {"anything": [1, 2]}
    hdr = json.loads(dumps_header({}))
    hdr["future"] = True
    p = _write(tmp_path / "e.jsonl", [json.dumps(hdr) + "\n", json.dumps(line) + "\n"])
    assert read_events(p).events == ((_open(), 1.0),)
    assert read_events(_write(tmp_path / "h.jsonl", [dumps_header({})])).events == ()


def _reader_error(p: Path) -> str:
    for reader in (read_events, lambda q: list(iter_events(q))):
        with pytest.raises(CoachError) as ei:
            reader(p)
        msg = str(ei.value)
        assert "\n" not in msg and str(p) in msg
    return msg


GOOD = dumps(_open(), 1.0)


@pytest.mark.parametrize(
    "lines, line_no, words",
    [
        ([GOOD, "{not json\n"], 3, "not valid JSON"),
        ([GOOD, '{"type": "call_end", "t": NaN, "wall": 0}\n'], 3, "NaN"),
        ([GOOD, '{"type": "call_end", "t": 1e999, "wall": 0}\n'], 3, "infinity"),
        ([GOOD, '{"type": "call_end", "t": 1, "t": 2, "wall": 0}\n'], 3, "duplicate"),
        ([GOOD, "[" * 100000 + "\n"], 3, "not valid JSON"),
        ([GOOD, "\n"], 3, "empty line"),
        ([GOOD, GOOD.rstrip("\n")], 3, "truncated"),
        ([GOOD, GOOD[:20]], 3, "truncated"),
        ([GOOD, '{"type": "bogus", "t": 0, "wall": 0}\n'], 3, "unknown event type"),
        ([GOOD, '{"type": "partial", "t": 0, "wall": 0, "speaker": "boss", "text": ""}\n'], 3, "speaker"),
        ([GOOD, '{"type": "partial", "t": "0", "wall": 0, "speaker": "agent", "text": ""}\n'], 3, "not a number"),
        ([GOOD, '{"type": "call_end", "t": 1}\n'], 3, "wall"),
        ([GOOD, "[1, 2]\n"], 3, "JSON object"),
        ([GOOD, dumps_header({})], 3, "second header"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path, lines, line_no, words):
    p = _write(tmp_path / "bad.jsonl", [dumps_header({})] + lines)
    msg = _reader_error(p)
    assert f"line {line_no}" in msg and words in msg


def test_bad_utterances_are_refused():
    good = json.loads(dumps(_utt(), 1.0))
    for mutate, words in [
        (lambda o: o.update(level="calm"), "disagrees"),
        (lambda o: o.pop("sentiment"), "not all of"),
        (lambda o: o["escalation"].update(furious=0.9), "unknown key"),
        (lambda o: o.update(t=99.0), "differs from its end"),
        (lambda o: o["words"].append("word"), "not an object"),
        (lambda o: o.update(confidence=True), "not a number"),
    ]:
        obj = json.loads(json.dumps(good))
        mutate(obj)
        with pytest.raises(CoachError, match=words):
            decode(obj)
    with pytest.raises(CoachError, match="not an integer"):
        decode({**json.loads(dumps(_open(), 0.0)), "priority": 1.5})


def test_header_problems(tmp_path):
    hdr = json.loads(dumps_header({}))
    cases = [
        ([GOOD], "no header"),
        ([json.dumps({**hdr, "version": SCHEMA_VERSION + 1}) + "\n", GOOD], "newer"),
        ([json.dumps({**hdr, "version": "1"}) + "\n"], "unsupported schema version"),
        ([json.dumps({**hdr, "schema": "other"}) + "\n"], "schema"),
        ([], "empty"),
    ]
    for lines, words in cases:
        msg = _reader_error(_write(tmp_path / "h.jsonl", lines))
        assert words in msg
        if lines:
            assert "line 1" in msg


def test_non_utf8_and_missing_files(tmp_path):
    p = tmp_path / "latin.jsonl"
    p.write_bytes(dumps_header({}).encode() + '{"type": "partial", "text": "café"}\n'.encode("latin-1"))
    msg = _reader_error(p)
    assert "line 2" in msg and "UTF-8" in msg
    assert "does not exist" in _reader_error(tmp_path / "nope.jsonl")
    assert "not a regular file" in _reader_error(tmp_path)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "events.fifo"
    os.mkfifo(fifo)
    assert "not a regular file" in _reader_error(fifo)


def test_voice_and_word_trust_fields_round_trip():
    from coach.codec import dumps, loads
    from coach.events import Voice
    v = Voice(loudness_db=-21.34, speech_s=2.345, snr_db=24.0, pitch_hz=231.26, pitch_range_st=5.123,
              rate_sps=4.456, arousal=0.7123)
    u = Utterance(Speaker.CUSTOMER, 1.0, 3.5, "i want my money back", (), 0.8, -21.3, v)
    line = dumps(ScoredUtterance(u, None), 4.0)
    ev, wall = loads(line)
    assert ev.utterance.voice.arousal == 0.712 and ev.utterance.voice.pitch_hz == 231.3 and wall == 4.0
    assert dumps(ev, wall) == line
    st = TrajectoryState(Speaker.CUSTOMER, 3.5, 1.2, -0.3, Level.FRUSTRATED, Trend.RISING, Level.FRUSTRATED,
                         arousal=0.61, words_trusted=False, word_trust=0.2, driver="voice")
    line = dumps(st, 4.0)
    back, _ = loads(line)
    assert (back.words_trusted, back.driver, back.arousal, back.word_trust) == (False, "voice", 0.61, 0.2)
    assert dumps(back, 4.0) == line
    agent = Utterance(Speaker.AGENT, 1.0, 2.0, "sure", (), 0.9, None, Voice(-20.0, 1.0, 20.0, rate_sps=4.0))
    assert "arousal" not in dumps(ScoredUtterance(agent, None), 1.0)  # never an emotion on the agent
