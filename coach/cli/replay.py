"""The `coach` command. The only module that talks to the terminal or exits.

Every user-fixable problem arrives here as a :class:`~coach.errors.CoachError` and is
printed as one line (``coach: error: <cause>. <fix>``) with exit status 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import IO, Callable

from ..errors import CoachError
from ..events import Event, Partial, Prompt, ScoredUtterance, Speaker, TrajectoryState, event_to_json



def _fmt_t(t: float) -> str:
    m, s = divmod(max(t, 0.0), 60.0)
    return f"{int(m):02d}:{s:04.1f}"


class Timeline:
    """Prints a readable, call-ordered timeline; colour only on a terminal."""

    def __init__(self, out: IO[str], *, color: bool, show_trajectory: bool = False) -> None:
        self.out = out
        self.color = color
        self.show_trajectory = show_trajectory
        self.header = False

    def _c(self, code: str, text: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.color else text

    def __call__(self, ev: Event) -> None:
        if not self.header:
            self.out.write(f"{'time':>7}  {'speaker':<8}  {'level':<11}  text\n")
            self.header = True
        if isinstance(ev, ScoredUtterance):
            u = ev.utterance
            level = ""
            if ev.scores is not None:
                lv = ev.scores.level
                level = f"{lv.label} {ev.scores.escalation[lv.label]:.2f}"
                level = self._c({0: "32", 1: "33", 2: "31", 3: "35", 4: "1;31"}[int(lv)], f"{level:<11}")
            elif u.speaker is Speaker.CUSTOMER:
                level = f"{'(unsure)':<11}"
            who = self._c("36" if u.speaker is Speaker.AGENT else "34", f"{u.speaker.value.upper():<8}")
            conf = "" if u.confidence >= 0.6 else self._c("2", f"  [low confidence {u.confidence:.2f}]")
            self.out.write(f"{_fmt_t(u.start):>7}  {who}  {level or ' ' * 11}  {u.text}{conf}\n")
        elif isinstance(ev, Prompt):
            if ev.opened:
                mark = self._c("1;31" if ev.severity == "critical" else "1;33" if ev.severity == "warn" else "1;36",
                               f">> OPEN  {ev.prompt}")
                extra = f"  ({ev.reason})" if ev.reason else ""
                self.out.write(f"{_fmt_t(ev.t):>7}  {'':<8}  {'':<11}  {mark}: {ev.text}{extra}\n")
            else:
                self.out.write(f"{_fmt_t(ev.t):>7}  {'':<8}  {'':<11}  {self._c('2', f'<< close {ev.prompt} ({ev.reason})')}\n")
        elif isinstance(ev, TrajectoryState) and self.show_trajectory and ev.speaker is Speaker.CUSTOMER:
            self.out.write(f"{_fmt_t(ev.t):>7}  {'':<8}  {'':<11}  "
                           f"{self._c('2', f'~ customer {ev.state.label}, {ev.trend.value}, risk {ev.risk:.2f}')}\n")
        self.out.flush()


class JsonlWriter:
    """Writes each event as one JSON line and flushes it, so a crash loses nothing."""

    def __init__(self, path: Path, *, partials: bool) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.f = open(path, "w", encoding="utf-8")
        except OSError as e:
            raise CoachError(f"cannot write events to {path} ({e.strerror})", "choose a writable path for --events") from None
        self.partials = partials

    def __call__(self, ev: Event) -> None:
        if isinstance(ev, Partial) and not self.partials:
            return
        obj = event_to_json(ev)
        if obj is not None:
            self.f.write(json.dumps(obj, ensure_ascii=False) + "\n")
            self.f.flush()

    def close(self) -> None:
        self.f.close()


def _tee(*sinks: Callable[[Event], None]) -> Callable[[Event], None]:
    def sink(ev: Event) -> None:
        for s in sinks:
            s(ev)
    return sink


# ---------------------------------------------------------------- commands


def _speed(value: str):
    from ..pipeline import ReplayOptions, Speed
    v = value.strip().lower()
    if v == "fast":
        return ReplayOptions(speed=Speed.FAST)
    if v == "realtime":
        return ReplayOptions(speed=Speed.REALTIME)
    try:
        rate = float(v.rstrip("x"))
    except ValueError:
        raise argparse.ArgumentTypeError("use fast, realtime, or a rate such as 2x") from None
    if rate <= 0:
        raise argparse.ArgumentTypeError("the rate must be positive")
    return ReplayOptions(speed=Speed.REALTIME, rate=rate)


def cmd_replay(args: argparse.Namespace) -> int:
    from ..classifier import load_classifier
    from ..pipeline import Pipeline, Scorer
    from ..playbook import load_playbook
    from ..transcript import load_transcript, looks_like_transcript

    err = sys.stderr
    playbook = load_playbook(args.playbook)
    call_path = Path(args.call)
    # Partials only matter to a live screen or to --partials; replay skips them (half the CPU).
    options = dataclasses.replace(args.speed, partials=args.partials)
    if looks_like_transcript(call_path):
        if args.customer_file:
            raise CoachError("a transcript already holds both speakers", "pass only the transcript JSON")
        utterances = load_transcript(call_path)
        engine = None
        call = None
        err.write(f"coach: replaying transcript {call_path} ({len(utterances)} segments)\n")
    else:
        from ..audio import load_call
        from ..stt import SttOptions, open_engine
        engine = open_engine(SttOptions(engine=args.engine, vosk_model=args.vosk_model, partials=args.partials))
        call = load_call(call_path, args.customer_file, agent_channel=args.agent_channel,
                         mono_speaker=args.mono_speaker, sample_rate=engine.sample_rate)
        err.write(f"coach: speech engine: {engine.description}\n")
        for w in call.warnings:
            err.write(f"coach: warning: {w}\n")
        err.write(f"coach: replaying {call_path}" + (f" + {args.customer_file}" if args.customer_file else "")
                  + f" ({call.duration:.1f} s, {call.source_rate} Hz)\n")
    clf = load_classifier(args.model)
    sinks: list[Callable[[Event], None]] = []
    if not args.quiet:
        sinks.append(Timeline(sys.stdout, color=sys.stdout.isatty() and not os.environ.get("NO_COLOR"),
                              show_trajectory=args.trajectory))
    writer = JsonlWriter(Path(args.events), partials=args.partials) if args.events else None
    if writer:
        sinks.append(writer)
    pipe = Pipeline(scorer=Scorer(clf, playbook.min_word_conf), playbook=playbook, sink=_tee(*sinks),
                    engine=engine, options=options)
    try:
        summary = pipe.run_audio(call) if call is not None else pipe.run_transcript(utterances)
    except KeyboardInterrupt:
        pipe.stop()
        err.write("coach: stopped" + (f"; events so far are in {args.events}" if writer else "") + "\n")
        return 130
    finally:
        if writer:
            writer.close()
    opened = ", ".join(sorted({p.prompt for p in summary.prompts_opened})) or "none"
    err.write(f"coach: {summary.duration:.1f} s of call, {summary.utterances['agent']} agent and "
              f"{summary.utterances['customer']} customer utterances, customer peak {summary.peak}; "
              f"prompts opened: {opened}; took {summary.wall_s:.1f} s\n")
    if writer:
        err.write(f"coach: events written to {args.events}\n")
    return 0


def register(sub) -> None:
    r = sub.add_parser("replay", help="replay a recorded call (audio or transcript JSON) through the coach")
    r.add_argument("call", help="WAV/FLAC call recording (stereo, mono, or the agent's file), or a transcript .json")
    r.add_argument("customer_file", nargs="?", help="the customer's recording, when agent and customer are two files")
    r.add_argument("--agent-channel", default="left", choices=["left", "right"], help="stereo channel of the agent")
    r.add_argument("--mono-speaker", default="customer", choices=["agent", "customer"],
                   help="who is speaking in a mono recording (default customer)")
    r.add_argument("--speed", type=_speed, default="fast", help="fast (default), realtime, or a rate such as 2x")
    r.add_argument("--events", metavar="OUT.jsonl", help="write every event as JSON lines")
    r.add_argument("--partials", action="store_true",
                   help="also compute partial transcripts and write them to --events (slower)")
    r.add_argument("--engine", default="auto", choices=["auto", "vosk", "pocketsphinx"])
    r.add_argument("--vosk-model", metavar="PATH", help="a Vosk model folder (else VOSK_MODEL or models/vosk-*)")
    r.add_argument("--model", metavar="PATH", help="classifier folder (default: models/escalation-minilm)")
    r.add_argument("--playbook", metavar="YAML", help="playbook file (default: configs/playbook.yaml)")
    r.add_argument("--trajectory", action="store_true", help="show the customer's trajectory in the timeline")
    r.add_argument("--quiet", action="store_true", help="no timeline on stdout")
    r.set_defaults(func=cmd_replay)

    d = sub.add_parser("demo", help="replay the bundled escalating sample call (offline)")
    d.add_argument("--speed", type=_speed, default="fast")
    d.add_argument("--events", metavar="OUT.jsonl")
    d.set_defaults(func=lambda a: cmd_replay(argparse.Namespace(
        call=str(_demo_call()), customer_file=None, agent_channel="left", mono_speaker="customer", speed=a.speed,
        events=a.events, partials=False, engine="auto", vosk_model=None, model=None,
        playbook=None, trajectory=False, quiet=False)))



def _demo_call():
    from .. import resources
    return resources.locate(resources.DEMO_CALL)
