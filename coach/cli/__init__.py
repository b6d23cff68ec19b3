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
    The steps of a normal exit that matter to the user run in CPython's own order:
    threads are shut down and joined (``threading._shutdown``, which also stops idle
    executor pools), exit handlers run (logging, sounddevice, multiprocessing, temporary
    folders), the standard streams are flushed, and a failed flush of the output is an
    error, not a silent status 0. What is skipped is the freeing of objects, so nothing
    in coach may leave its output to a finaliser: every file is closed or flushed
    explicitly. ``main`` stays an ordinary function for in-process callers; ``--help``
    and argument errors leave through SystemExit, the normal way.
    """
    code = main(argv)
    try:
        threading._shutdown()  # what CPython's own exit calls first (every CPython 3)
        atexit._run_exitfuncs()
        code = _flush_std(code)
    except KeyboardInterrupt:  # Ctrl-C while leaving: everything coach writes is already closed
        code = 130
    os._exit(code)


def _flush_std(code: int) -> int:
    """Flush stdout and stderr as the interpreter would at exit; the exit status for it."""
    for stream in (sys.stdout, sys.stderr):
        if stream is None:
            continue
        try:
            stream.flush()
        except BrokenPipeError:
            if stream is sys.stdout:
                _quiet_stdout()  # the reader went away (``| head``): what was written stands
        except (OSError, ValueError) as e:
            if stream is sys.stdout:  # disk full, file too large, I/O error: the output is short
                reason = getattr(e, "strerror", None) or str(e)
                failed = fail(f"could not write the output ({reason}). "
                              "free space or write it somewhere else, then run the command again")
                code = code or failed
    return code


__all__ = ["build_parser", "main", "run"]
