"""``coach board``: the supervisors' page, fed by every session's ``--supervisor`` webhook.

It serves until Ctrl-C or SIGTERM, which stop it cleanly (exit status 0: stopping is
the normal way to end a server). The token may come from ``--token`` or, to keep it
out of the process list, from ``$COACH_BOARD_TOKEN``.
"""
from __future__ import annotations

import argparse
import os
import signal
import threading

from .common import status

DEFAULT_PORT = 8765


def cmd_board(args: argparse.Namespace) -> int:
    from ..supervisor import BoardServer

    token = args.token or os.environ.get("COACH_BOARD_TOKEN") or None
    board = BoardServer(args.host, args.port, token)
    stop = threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda signum, frame: stop.set())
    try:
        board.start()
        url = board.url
        hint = "?token=<your token>" if token else ""
        status(f"board on {url}{hint} ; sessions report to {url}api/report (Ctrl-C stops)")
        while not stop.wait(0.5):
            if not board.web.alive:
                from ..errors import CoachError
                raise CoachError("the board server stopped unexpectedly", "see the log above and start it again")
    finally:
        board.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    status(f"board stopped ({board.received} reports received, {board.refused} refused)")
    return 0


def register(sub) -> None:
    b = sub.add_parser("board", help="serve the supervisors' board that collects sessions' --supervisor alerts")
    b.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; any other address needs --token)")
    b.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free port)")
    b.add_argument("--token", help="shared secret of 16+ characters that the page, the API and the webhooks must "
                                   "send (default $COACH_BOARD_TOKEN)")
    b.set_defaults(func=cmd_board)
