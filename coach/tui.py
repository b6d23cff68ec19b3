"""``coach live --tui``: the overlay's content in a terminal, redrawn in place.

Why a separate view from the timeline: an agent glances at it mid-call, so it shows
state, not history: the one current prompt (highest priority, then newest), the
customer's state with a small sparkline, a "transcript unreliable" badge and the last
few lines of the transcript. :class:`LiveView` is the pure state (testable without a
terminal); :class:`TuiSink` draws it with ANSI codes at most ``fps`` times a second.
"""
from __future__ import annotations

import shutil
import time
from collections import deque
from dataclasses import dataclass, field
from typing import IO

from .events import CallEnd, Event, Partial, Prompt, ScoredUtterance, Speaker, TrajectoryState
from .sinks import fmt_t, safe_text

_SPARK = " ▁▂▃▄▅▆▇█"
PARTIAL_TTL_S = 5.0
_SEVERITY_STYLE = {"critical": "1;97;41", "warn": "1;30;43", "info": "1;30;46"}


@dataclass
class LiveView:
    """What the agent should see now, folded from the events of one call."""

    open_prompts: dict[str, Prompt] = field(default_factory=dict)
    lines: deque = field(default_factory=lambda: deque(maxlen=6))  # (speaker, text, final)
    partial: dict[Speaker, tuple[str, float]] = field(default_factory=dict)  # text, call time
    escalation: deque = field(default_factory=lambda: deque(maxlen=40))
    state: str = "calm"
    risk: float = 0.0
    arousal: float | None = None
    words_trusted: bool = True
    t: float = 0.0
    ended: bool = False

    def apply(self, ev: Event) -> None:
        if isinstance(ev, Prompt):
            if ev.opened:
                self.open_prompts[ev.prompt] = ev
            else:
                self.open_prompts.pop(ev.prompt, None)
        elif isinstance(ev, ScoredUtterance):
            u = ev.utterance
            self.partial.pop(u.speaker, None)
            self.lines.append((u.speaker, u.text, True))
        elif isinstance(ev, Partial):
            self.partial[ev.speaker] = (ev.text, ev.t)
            if ev.arousal is not None:
                self.arousal = ev.arousal  # the voice, live, before the turn ends
        elif isinstance(ev, TrajectoryState) and ev.speaker is Speaker.CUSTOMER:
            self.escalation.append(ev.escalation)
            self.state, self.risk, self.arousal = ev.state.label, ev.risk, ev.arousal
            self.words_trusted = ev.words_trusted
        elif isinstance(ev, CallEnd):
            self.ended = True
            self.open_prompts.clear()
        self.t = max(self.t, getattr(ev, "t", 0.0) or 0.0)
        # A partial whose turn never became an utterance (noise, a dropped fragment) fades.
        for who, (_, t) in list(self.partial.items()):
            if self.t - t > PARTIAL_TTL_S:
                del self.partial[who]

    def current(self) -> Prompt | None:
        """The prompt to show: highest priority first, then the most recently opened."""
        if not self.open_prompts:
            return None
        return max(self.open_prompts.values(), key=lambda p: (p.priority, p.t))

    def sparkline(self) -> str:
        return "".join(_SPARK[min(len(_SPARK) - 1, int(round(v * (len(_SPARK) - 1))))] for v in self.escalation)

    def render(self, width: int = 80, color: bool = True) -> list[str]:
        def c(code: str, text: str) -> str:
            return f"\033[{code}m{text}\033[0m" if color else text

        width = max(30, width)
        out = [c("2", f"coach live  {fmt_t(self.t)}" + ("  (call ended)" if self.ended else ""))]
        p = self.current()
        if p is None:
            out += ["", c("2", "  no prompt"), ""]
        else:
            label = f" {p.prompt.replace('_', ' ').upper()} "
            out += ["", c(_SEVERITY_STYLE.get(p.severity, "1"), label.ljust(width)[:width]),
                    c("1", safe_text(p.text)[:width])]
            others = sorted((q for q in self.open_prompts.values() if q is not p), key=lambda q: -q.priority)
            if others:
                out.append(c("2", "also: " + ", ".join(q.prompt for q in others))[:width + 10])
        voice = f"  voice {self.arousal:.2f}" if self.arousal is not None else ""
        out += ["", f"customer {self.state:<11} risk {self.risk:.2f}{voice}  {self.sparkline()}"[:width]]
        if not self.words_trusted:
            out.append(c("1;33", "[transcript unreliable: word prompts paused, voice cues on]"[:width]))
        out.append("")
        for who, text, _ in self.lines:
            out.append(f"{who.value[:4]:>4}  {safe_text(text)}"[:width])
        for who, (text, _) in self.partial.items():
            out.append(c("2", f"{who.value[:4]:>4}  {safe_text(text)} ..."[:width]))
        return out


class TuiSink:
    """Redraws the :class:`LiveView` on a terminal (a bus sink: its own thread)."""

    name = "terminal view"

    def __init__(self, out: IO[str], *, color: bool = True, fps: float = 10.0) -> None:
        self.out = out
        self.color = color
        self.view = LiveView()
        self._min_gap = 1.0 / fps
        self._last = 0.0

    def handle(self, ev: Event, wall: float) -> None:
        self.view.apply(ev)
        now = time.monotonic()
        # Only partials (several a second) are throttled: every other event is drawn, so
        # the state shown is never one event behind.
        if not isinstance(ev, Partial) or now - self._last >= self._min_gap:
            self._last = now
            self._draw()

    def _draw(self) -> None:
        cols = shutil.get_terminal_size((80, 24)).columns
        lines = self.view.render(cols, self.color)
        # Home, draw, clear to end of each line and of the screen: no flicker, no scroll.
        self.out.write("\033[H" + "".join(f"{ln}\033[K\n" for ln in lines) + "\033[J")
        self.out.flush()

    def close(self) -> None:
        self._draw()
