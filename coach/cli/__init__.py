"""The ``coach`` command: a thin layer that parses, calls the library, prints errors.

One module per command group (``replay``, ``models``, ``config``, ``research``); this
package is the only code that talks to the terminal or decides an exit status. Every
user-fixable problem arrives as a :class:`~coach.errors.CoachError` and is printed as
one line, ``coach: error: <cause>. <fix>``, with exit status 2.
"""
from __future__ import annotations

import argparse
import atexit
import os
import sys
import threading
from typing import NoReturn

from ..errors import CoachError
from .common import fail


class _Parser(argparse.ArgumentParser):
    """argparse with the same ``coach: error:`` prefix as every other error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        fail(f"{message}. see `{self.prog} --help`")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    from . import board, config, devices, live, models, replay
    p = _Parser(prog="coach", description="Offline live call coach: transcribe, score, coach.")
    p.add_argument("--version", action="version", version="coach 0.1.0")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    replay.register(sub)
    live.register(sub)
    devices.register(sub)
    board.register(sub)
    models.register(sub)
    config.register(sub)
    try:
        from . import research
    except ImportError:  # the research extras are optional
        research = None  # type: ignore[assignment]
    if research is not None:
        research.register(sub)
    return p


def _quiet_stdout() -> None:
    """After stdout broke (``| head``), point it at /dev/null so exiting cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CoachError as e:
        return fail(e)
    except BrokenPipeError:
        # The reader went away (``coach classify ... | head``): what was written stands.
        _quiet_stdout()
        return 0
    except KeyboardInterrupt:
        fail("interrupted. results written so far are kept")
        return 130


def run(argv: list[str] | None = None) -> NoReturn:
    """The ``coach`` command: :func:`main`, then an exit that skips the interpreter's teardown.

    Why: with torch and a model loaded, CPython's finalization (module teardown, freeing
    the model) takes 0.6-1.5 s after coach has closed and flushed everything it writes,
    so an agent who presses Ctrl-C waits for nothing (``benchmarks/bench_shutdown.py``).
    Everything a normal exit does for the user still happens, in the same order: other
    non-daemon threads are joined, the exit handlers run (logging, sounddevice,
    multiprocessing, temporary folders), the standard streams are flushed; only then does
    the process end. ``main`` itself stays an ordinary function for in-process callers.
    """
    code = main(argv)
    for t in threading.enumerate():
        if t is not threading.current_thread() and not t.daemon:
            t.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BrokenPipeError:
            _quiet_stdout()  # the reader went away (``| head``): what was written stands
        except (OSError, ValueError):
            pass
    os._exit(code)


__all__ = ["build_parser", "main", "run"]
