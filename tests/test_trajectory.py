"""Trajectory: push scored utterances in, assert the states that come out."""
from __future__ import annotations

from coach.events import LEVELS, Level, ScoredUtterance, Scores, Speaker, Trend, Utterance, Word
from coach.trajectory import Trajectory, speaking_rate


def scored(t: float, level: str, dur: float = 3.0, conf: float = 1.0, speaker=Speaker.CUSTOMER, db=None):
    esc = {lv: (0.85 if lv == level else 0.0375) for lv in LEVELS}
    u = Utterance(speaker, t - dur, t, f"{level} words", (), conf, db)
    return ScoredUtterance(u, Scores(esc, {"negative": 0.2, "neutral": 0.6, "positive": 0.2}))


def test_one_odd_utterance_does_not_flip_state():
    tr = Trajectory(Speaker.CUSTOMER)
    for t in (4, 8, 12, 16, 20):
        tr.update(scored(t, "calm"))
    s = tr.update(scored(24, "angry"))
    assert s.state < Level.ANGRY
    for t in (28, 32):
        s = tr.update(scored(t, "calm"))
    assert s.state == Level.CALM


def test_sustained_anger_rises_then_hysteresis_holds_then_falls():
    tr = Trajectory(Speaker.CUSTOMER)
    states = [tr.update(scored(t, "angry")) for t in (3, 6, 9, 12)]
    assert states[-1].state == Level.ANGRY
    assert states[-1].peak == Level.ANGRY
    # A single calm reply right after does not drop it back to calm.
    s = tr.update(scored(14, "calm", dur=1.5))
    assert s.state >= Level.FRUSTRATED
    # Calm for a minute brings it down, and the trend shows it falling.
    seen = [tr.update(scored(t, "calm")) for t in range(18, 80, 4)]
    assert any(x.trend is Trend.FALLING for x in seen)
    assert seen[-1].state == Level.CALM
    assert seen[-1].peak == Level.ANGRY


def test_rising_trend_detected():
    tr = Trajectory(Speaker.CUSTOMER)
    for t in (4, 8, 12):
        tr.update(scored(t, "calm"))
    s = None
    for t in (15, 18):
        s = tr.update(scored(t, "angry"))
    assert s.trend is Trend.RISING
    assert s.risk > 0.5


def test_low_confidence_utterances_move_the_average_less():
    sure, unsure = Trajectory(Speaker.CUSTOMER), Trajectory(Speaker.CUSTOMER)
    for t in (4, 8):
        sure.update(scored(t, "calm")), unsure.update(scored(t, "calm"))
    a = sure.update(scored(12, "threatening", conf=1.0))
    b = unsure.update(scored(12, "threatening", conf=0.1))
    assert b.escalation < a.escalation


def test_time_decay_matters_not_count():
    slow, quick = Trajectory(Speaker.CUSTOMER), Trajectory(Speaker.CUSTOMER)
    slow.update(scored(3, "angry")), quick.update(scored(3, "angry"))
    a = slow.update(scored(120, "calm"))  # two minutes later: the anger has faded
    b = quick.update(scored(5, "calm"))
    assert a.escalation < b.escalation


def test_speaking_rate_from_word_times_and_loudness_baseline():
    words = tuple(Word(f"w{i}", i * 0.25, i * 0.25 + 0.2) for i in range(20))  # 20 words in 4.95 s
    u = Utterance(Speaker.AGENT, 0.0, 5.0, " ".join(w.word for w in words), words)
    from collections import deque
    wpm = speaking_rate(deque([u]), 5.0, 30.0, 6)
    assert 230 < wpm < 250
    tr = Trajectory(Speaker.CUSTOMER)
    for t in (3, 6, 9):
        tr.update(scored(t, "calm", db=-30.0))
    s = tr.update(scored(12, "angry", db=-22.0))
    assert abs(s.loudness_rel_db - 8.0) < 1e-6
