"""Consumers of a call's events: the terminal timeline, the events file, a progress bar.

Each runs on its own bus thread (:mod:`coach.bus`), so none of them can stall the
coach. They are the edges where text leaves the program, so this is where control
characters are filtered (an ANSI escape in a transcript must not recolour or move the
agent's terminal) and where the events file is guarded: it is always a new file (or an
explicitly forced one), never one of the call's inputs, never shared by two writers,
flushed per event and made only of whole lines.
"""
from __future__ import annotations

import errno
import fcntl
import os
import re
import shutil
import textwrap
from pathlib import Path
from typing import IO, Iterable, Mapping

from . import codec
from .errors import CoachError
from .events import CallEnd, Event, Partial, Prompt, ScoredUtterance, Speaker, TrajectoryState

# C0/C1 control characters except tab and newline, and DEL.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def safe_text(text: str) -> str:
    """``text`` with control characters (ESC included) replaced by U+FFFD."""
    return _CONTROL.sub("\ufffd", text)


def fmt_t(t: float) -> str:
    m, s = divmod(max(t, 0.0), 60.0)
    return f"{int(m):02d}:{s:04.1f}"


# ---------------------------------------------------------------- timeline


class Timeline:
    """A readable, call-ordered timeline for a terminal or a pipe.

    The time column is each event's call time ``t`` (for an utterance, when it ended:
    the moment the coach could act on it), so the column never runs backwards; the
    utterance's start is shown beside it when the two differ by more than a second.
    Long text wraps under the text column instead of breaking the columns.
    """

    name = "timeline"
    _LEVEL_COLOURS = {0: "32", 1: "33", 2: "31", 3: "35", 4: "1;31"}

    def __init__(self, out: IO[str], *, color: bool = False, show_trajectory: bool = False,
                 partials: bool = False, width: int | None = None) -> None:
        self.out = out
        self.color = color
        self.show_trajectory = show_trajectory
        self.partials = partials
        self.width = width
        self.header = False
        self.last_t = 0.0
        self._trusted: dict[Speaker, bool] = {}

    def _c(self, code: str, text: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.color else text

    def _cols(self) -> int:
        return self.width or shutil.get_terminal_size((100, 24)).columns

    def _line(self, t: float, who: str, level: str, text: str, style: str = "", suffix: str = "") -> str:
        self.last_t = max(self.last_t, t)
        prefix_w = 7 + 2 + 8 + 2 + 11 + 2
        room = max(20, self._cols() - prefix_w)
        lines = textwrap.wrap(safe_text(text), room, break_long_words=True, break_on_hyphens=False) or [""]
        body = [self._c(style, ln) if style else ln for ln in lines]
        if suffix:
            body[-1] += suffix
        first = f"{fmt_t(self.last_t):>7}  {who}  {level}  {body[0]}"
        rest = [" " * prefix_w + b for b in body[1:]]
        return "\n".join([first, *rest]) + "\n"

    def handle(self, ev: Event, wall: float) -> None:
        if not self.header:
            self.out.write(f"{'time':>7}  {'speaker':<8}  {'level':<11}  text\n")
            self.header = True
        text = self._render(ev)
        if text:
            self.out.write(text)
            self.out.flush()

    def _render(self, ev: Event) -> str:
        blank_who, blank_level = " " * 8, " " * 11
        if isinstance(ev, ScoredUtterance):
            u = ev.utterance
            level = " " * 11
            if ev.scores is not None:
                lv = ev.scores.level
                level = self._c(self._LEVEL_COLOURS[int(lv)], f"{lv.label} {ev.scores.escalation[lv.label]:.2f}".ljust(11))
            elif u.speaker is Speaker.CUSTOMER:
                level = "(unsure)".ljust(11)
            who = self._c("36" if u.speaker is Speaker.AGENT else "34", u.speaker.value.upper().ljust(8))
            extra = ""
            if u.end - u.start > 1.0:
                extra += self._c("2", f"  [from {fmt_t(u.start)}]")
            if u.confidence < 0.6:
                extra += self._c("2", f"  [low confidence {u.confidence:.2f}]")
            if u.voice is not None and u.voice.arousal is not None:
                extra += self._c("35" if u.voice.arousal >= 0.6 else "2", f"  [voice {u.voice.arousal:.2f}]")
            return self._line(u.end, who, level, u.text, suffix=extra)
        if isinstance(ev, Prompt):
            if ev.opened:
                style = "1;31" if ev.severity == "critical" else "1;33" if ev.severity == "warn" else "1;36"
                text = f">> OPEN  {ev.prompt}: {ev.text}" + (f"  ({ev.reason})" if ev.reason else "")
                return self._line(ev.t, blank_who, blank_level, text, style)
            return self._line(ev.t, blank_who, blank_level, f"<< close {ev.prompt} ({ev.reason})", "2")
        if isinstance(ev, TrajectoryState):
            out = ""
            if self._trusted.get(ev.speaker, True) != ev.words_trusted:
                self._trusted[ev.speaker] = ev.words_trusted
                msg = (f"~ {ev.speaker.value} transcript unreliable: word-based prompts paused, voice cues carry on"
                       if not ev.words_trusted else f"~ {ev.speaker.value} transcript reliable again")
                out += self._line(ev.t, blank_who, blank_level, msg, "33" if not ev.words_trusted else "2")
            if self.show_trajectory and ev.speaker is Speaker.CUSTOMER:
                voice = f", voice {ev.arousal:.2f}" if ev.arousal is not None else ""
                by = f" ({ev.driver})" if ev.driver else ""
                out += self._line(ev.t, blank_who, blank_level,
                                  f"~ customer {ev.state.label}{by}, {ev.trend.value}, risk {ev.risk:.2f}{voice}", "2")
            return out
        if isinstance(ev, Partial) and self.partials:
            return self._line(ev.t, ev.speaker.value.lower().ljust(8), blank_level, f"... {ev.text}", "2")
        if isinstance(ev, CallEnd):
            return self._line(ev.t, blank_who, blank_level, "-- call end --", "2")
        return ""

    def close(self) -> None:
        self.out.flush()


# ---------------------------------------------------------------- progress


class Progress:
    """A one-line progress bar for long replays when stdout is not the timeline."""

    name = "progress"

    def __init__(self, out: IO[str], duration: float | None, *, min_interval_s: float = 0.25) -> None:
        self.out = out
        self.duration = duration
        self.min_interval_s = min_interval_s
        self._last_wall = -1e9
        self._shown = False

    def handle(self, ev: Event, wall: float) -> None:
        if wall - self._last_wall < self.min_interval_s and not isinstance(ev, CallEnd):
            return
        self._last_wall = wall
        t = ev.t
        if self.duration:
            frac = min(1.0, t / self.duration)
            bar = "#" * int(frac * 30)
            line = f"\r  [{bar:<30}] {fmt_t(t)} / {fmt_t(self.duration)} of call"
        else:
            line = f"\r  {fmt_t(t)} of call"
        if wall > 0.5 and t > 0:
            line += f", {t / wall:.1f}x real time"
        self.out.write(line + " " * 4)
        self.out.flush()
        self._shown = True

    def close(self) -> None:
        if self._shown:
            self.out.write("\n")
            self.out.flush()


# ---------------------------------------------------------------- events file


def same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_events_path(path: str | os.PathLike, inputs: Iterable[str | os.PathLike | None], *,
                      force: bool = False) -> Path:
    """Refuse an events path that would destroy data, before anything slow is loaded.

    It may never be one of the call's inputs (recording, transcript, playbook, model),
    even with ``force``; an existing file is replaced only with ``force``.
    """
    p = Path(path).expanduser()
    for inp in inputs:
        if inp is not None and (same_file(p, Path(inp)) or p.resolve() == Path(inp).expanduser().resolve()):
            raise CoachError(f"--events {p} is one of this call's inputs and would be overwritten",
                             "choose a new file for --events, e.g. out/events.jsonl")
    if p.is_dir():
        raise CoachError(f"--events {p} is a directory", "give a file path such as out/events.jsonl")
    if p.exists() and not force:
        raise CoachError(f"--events {p} already exists", "choose a new file, or pass --force to replace it")
    if p.exists() and not p.is_file():
        raise CoachError(f"--events {p} is not a regular file", "give a file path such as out/events.jsonl")
    return p


class JsonlSink:
    """The events file: a header line with the schema version, then one event per line.

    Every line is written with one ``os.write`` and flushed, so a crash loses nothing
    already computed. A failed write (disk full, file size limit) is rolled back to the
    last whole line and the sink stops; the bus reports it. An exclusive ``flock`` keeps a
    second coach from writing the same file.
    """

    name = "events file"

    def __init__(self, path: str | os.PathLike, meta: Mapping[str, object], *, partials: bool = False,
                 force: bool = False) -> None:
        self.path = Path(path)
        self.partials = partials
        self.count = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | (0 if force else os.O_EXCL)
            self.fd = os.open(self.path, flags, 0o644)
        except FileExistsError:
            raise CoachError(f"--events {self.path} already exists", "choose a new file, or pass --force to replace it") from None
        except OSError as e:
            raise CoachError(f"cannot write events to {self.path} ({e.strerror})",
                             "choose a writable path for --events") from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self.fd)
            raise CoachError(f"another coach is writing {self.path}", "give each run its own --events file") from None
        os.ftruncate(self.fd, 0)
        self.size = 0
        self._write(codec.dumps_header(dict(meta)))

    def _write(self, line: str) -> None:
        data = line.encode("utf-8")
        try:
            n = os.write(self.fd, data)
            if n != len(data):
                raise OSError(errno.ENOSPC, "No space left on device (short write)")
        except OSError:
            try:
                os.ftruncate(self.fd, self.size)  # never leave half a line
            except OSError:
                pass
            raise
        self.size += len(data)

    def handle(self, ev: Event, wall: float) -> None:
        if isinstance(ev, Partial) and not self.partials:
            return
        line = codec.dumps(ev, wall)
        if line is not None:
            self._write(line)
            self.count += 1

    def close(self) -> None:
        if self.fd >= 0:
            try:
                os.fsync(self.fd)
            except OSError:
                pass
            os.close(self.fd)
            self.fd = -1


__all__ = ["JsonlSink", "Progress", "Timeline", "check_events_path", "fmt_t", "safe_text"]
