"""``coach replay`` and ``coach demo``: a recorded call through the session.

Signals: Ctrl-C and SIGTERM (and a second Ctrl-C) all ask the session to stop; the run
then closes open prompts, writes ``call_end`` at the call time reached and drains the
sinks, which takes well under two seconds. A further signal while stopping is ignored
rather than tearing down the events file half-written.

"""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from typing import Iterator

from ..errors import CoachError
from .common import fail, safe_text, status, warn


@contextlib.contextmanager
def _stop_on_signals(session) -> Iterator[list[int]]:
    """Route SIGINT/SIGTERM to ``session.stop()`` for the duration of the run."""
    got: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield got
        return

    def handler(signum, frame) -> None:  # noqa: ARG001
        got.append(signum)
        if len(got) == 1:
            status("stopping (closing prompts and the events file)...")
        session.stop()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)
    # Not restored afterwards: a late second Ctrl-C while the summary is printed must not
    # turn into a traceback; the command is about to exit anyway.
    yield got


def _stdout_for_timeline():
    """stdout that cannot fail on characters the terminal's encoding lacks."""
    out = sys.stdout
    with contextlib.suppress(AttributeError, ValueError):
        out.reconfigure(errors="replace")
    return out


def run_replay(args: argparse.Namespace) -> int:
    from ..session import settings_from

    quiet = bool(getattr(args, "quiet", False))
    settings = settings_from(**vars(args), timeline=not quiet,
                             progress=sys.stderr.isatty() and (quiet or not sys.stdout.isatty()),
                             color=sys.stdout.isatty() and not os.environ.get("NO_COLOR"))
    return execute(settings)


def execute(settings) -> int:
    """Load and run one session (replay or live), then report how it went."""
    from ..session import Session

    session = Session(settings, stdout=_stdout_for_timeline(), stderr=sys.stderr, status=status)
    try:
        session.load()
        with _stop_on_signals(session) as signals:
            result = session.run()
    finally:
        session.close()
    summary = result.summary
    code = 0
    for rep in result.sinks:
        if rep.error is not None:
            if rep.name == "events file":
                fail(CoachError(f"the events file {result.events_path} stopped after {rep.handled} events "
                                f"({rep.error})", "free space or choose another --events path, then replay again"))
                code = 1
            elif rep.name != "timeline":  # a closed stdout (| head) is the reader's choice
                warn(f"{rep.name} stopped ({rep.error}); {rep.lost} events not shown")
        elif rep.dropped or rep.lost or not rep.finished:
            warn(f"{rep.name}: {rep.dropped} events dropped (it fell behind), {rep.lost} not delivered")
    opened = ", ".join(sorted({p.prompt for p in summary.prompts_opened})) or "none"
    status(f"{'stopped at' if summary.stopped else 'done:'} {summary.duration:.1f} s of call, "
           f"{summary.utterances['agent']} agent and {summary.utterances['customer']} customer utterances, "
           f"customer peak {summary.peak}; prompts opened: {opened}; took {summary.wall_s:.1f} s")
    capture = session.capture_report()
    if capture:
        status(capture)
    if result.events_path is not None and code == 0:
        status(f"{result.events_written} events written to {safe_text(str(result.events_path))}")
    if signals:
        return 130 if signals[0] == signal.SIGINT else 143
    return code


def _demo(args: argparse.Namespace) -> int:
    from .. import resources
    ns = argparse.Namespace(**{**vars(args), "call": str(resources.locate(resources.DEMO_CALL))})
    return run_replay(ns)


def add_model_options(r: argparse.ArgumentParser) -> None:
    """Engine, classifier and playbook: the same flags for replay and live."""
    r.add_argument("--engine", default="auto", choices=["auto", "vosk", "pocketsphinx"],
                   help="speech engine: Vosk when a model is found (auto), or the bundled PocketSphinx")
    r.add_argument("--vosk-model", metavar="PATH", help="a Vosk model folder (else $VOSK_MODEL or models/vosk-*)")
    r.add_argument("--model", metavar="PATH", help="classifier folder or name (default: escalation-minilm)")
    r.add_argument("--playbook", metavar="YAML", help="playbook file (default: configs/playbook.yaml)")


def _add_common(r: argparse.ArgumentParser) -> None:
    r.add_argument("--speed", default="fast", help="fast (default), realtime, or a rate such as 2x")
    r.add_argument("--events", metavar="OUT.jsonl",
                   help="write every event as JSON lines to this new file (see docs/events.md)")
    r.add_argument("--force", action="store_true", help="replace --events if it exists (never an input file)")
    add_model_options(r)
    r.add_argument("--trajectory", action="store_true", help="show the customer's trajectory in the timeline")
    r.add_argument("--quiet", action="store_true", help="no timeline on stdout (a progress bar on a terminal's stderr)")
    r.add_argument("--partials", action="store_true",
                   help="also compute partial transcripts and write them to --events (slower)")


def register(sub) -> None:
    r = sub.add_parser("replay", help="replay a recorded call (audio or transcript JSON) through the coach")
    r.add_argument("call", help="WAV/FLAC call recording (stereo, mono, or the agent's file), or a transcript .json")
    r.add_argument("customer_file", nargs="?", help="the customer's recording, when agent and customer are two files")
    r.add_argument("--agent-channel", default="left", choices=["left", "right"], help="stereo channel of the agent")
    r.add_argument("--mono-speaker", default="customer", choices=["agent", "customer"],
                   help="who is speaking in a mono recording (default customer)")
    _add_common(r)
    r.set_defaults(func=run_replay)

    d = sub.add_parser("demo", help="replay the bundled escalating sample call (offline)")
    _add_common(d)
    d.set_defaults(func=_demo, customer_file=None, agent_channel="left", mono_speaker="customer")


__all__ = ["add_model_options", "execute", "register", "run_replay"]
