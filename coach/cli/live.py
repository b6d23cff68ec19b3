"""``coach live``: coach a call as it happens, from two input devices or one stereo one.

The same session, pipeline and events as replay: only the source differs (a
:class:`coach.capture.DeviceSource`), so a recording made with ``--record`` replays to
what the agent saw. Ctrl-C or SIGTERM ends the call; the events file is complete.
"""
from __future__ import annotations

import argparse
import os
import sys

from .replay import add_model_options, execute


def run_live(args: argparse.Namespace) -> int:
    from ..session import settings_from

    tty = sys.stdout.isatty()
    settings = settings_from(**vars(args), call="", live=True, partials=not args.no_partials,
                             speed="realtime", timeline=not args.quiet,
                             color=tty and not os.environ.get("NO_COLOR"))
    return execute(settings)


def register(sub) -> None:
    r = sub.add_parser("live", help="coach a live call from sound devices (see `coach devices`)",
                       description="Capture the agent's microphone and the call audio, coach live, show prompts "
                                   "on a local overlay page and/or in the terminal.")
    r.add_argument("--agent-device", metavar="D", help="the agent's microphone: index or name (see `coach devices`)")
    r.add_argument("--customer-device", metavar="D",
                   help="the call audio, i.e. the customer (e.g. the softphone output's monitor/loopback)")
    r.add_argument("--device", metavar="D", help="one stereo device carrying both sides instead (see --agent-channel)")
    r.add_argument("--agent-channel", default="left", choices=["left", "right"],
                   help="with --device: the agent's channel (the customer is the other)")
    r.add_argument("--events", metavar="OUT.jsonl", help="write every event as JSON lines, flushed as the call goes")
    r.add_argument("--record", metavar="OUT.wav", help="also record the call (agent left, customer right)")
    r.add_argument("--force", action="store_true", help="replace --events/--record if they exist")
    r.add_argument("--port", type=int, metavar="N",
                   help="serve the overlay page on this port (0: any free port); default: no overlay")
    r.add_argument("--host", default="127.0.0.1",
                   help="overlay address (default 127.0.0.1; any other needs --token)")
    r.add_argument("--token", help="access token for the overlay (at least 16 characters) and the supervisor feed")
    r.add_argument("--supervisor", metavar="URL",
                   help="send critical prompts to this webhook, e.g. http://HOST:PORT/api/report of `coach board`")
    r.add_argument("--name", help="this session's name on the supervisor board (default: host-pid)")
    r.add_argument("--tui", action="store_true", help="a terminal view (current prompt, state, transcript)")
    r.add_argument("--quiet", action="store_true", help="no timeline on stdout")
    r.add_argument("--no-partials", action="store_true", help="no partial transcripts (a little less CPU)")
    add_model_options(r)
    r.set_defaults(func=run_live)


__all__ = ["register", "run_live"]
