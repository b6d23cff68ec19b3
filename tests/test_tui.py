"""The terminal view: the same state the overlay shows, folded from events."""
from __future__ import annotations

import io

from coach.events import CallEnd, Level, Partial, Prompt, Scores, ScoredUtterance, Speaker, TrajectoryState, Trend, Utterance
from coach.tui import LiveView, TuiSink


def _prompt(pid, t, opened=True, priority=50, severity="warn"):
    return Prompt(prompt=pid, t=t, opened=opened, text=f"{pid} text", priority=priority, severity=severity)


def _traj(t, esc, trusted=True):
    return TrajectoryState(Speaker.CUSTOMER, t, esc, 0.0, Level.ANGRY if esc > 0.5 else Level.CALM, Trend.RISING,
                           Level.ANGRY, risk=esc, arousal=0.7, words_trusted=trusted)


def test_current_prompt_is_highest_priority_then_newest_and_closes():
    v = LiveView()
    v.apply(_prompt("apologize", 1.0, priority=80))
    v.apply(_prompt("slow_down", 2.0, priority=60))
    assert v.current().prompt == "apologize"
    v.apply(_prompt("call_security", 3.0, priority=100, severity="critical"))
    assert v.current().prompt == "call_security"
    v.apply(_prompt("call_security", 4.0, opened=False))
    assert v.current().prompt == "apologize"
    v.apply(CallEnd(9.0))
    assert v.current() is None and v.ended


def test_render_shows_prompt_state_badge_and_transcript_without_control_characters():
    v = LiveView()
    u = Utterance(Speaker.CUSTOMER, 0.0, 2.0, "this is \x1b[31mridiculous")
    v.apply(ScoredUtterance(u, None))
    v.apply(Partial(Speaker.AGENT, 2.5, "i am so"))
    v.apply(_traj(2.0, 0.8, trusted=False))
    v.apply(_prompt("apologize", 2.0, priority=80))
    lines = v.render(60, color=False)
    text = "\n".join(lines)
    assert "APOLOGIZE" in text and "apologize text" in text
    assert "transcript unreliable" in text and "risk 0.80" in text
    assert "ridiculous" in text and "\x1b" not in text and "i am so ..." in text
    assert all(len(ln) <= 60 for ln in lines)


def test_sink_redraws_in_place():
    out = io.StringIO()
    s = TuiSink(out, color=False, fps=1000)
    s.handle(_prompt("apologize", 1.0), 0.1)
    s.close()
    assert out.getvalue().count("\x1b[H") == 2 and "APOLOGIZE" in out.getvalue()
