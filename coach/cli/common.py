"""What every command shares: one-line errors, status lines, safe terminal text.

Only the CLI writes to the terminal. Errors look the same from every command,
``coach: error: <cause>. <fix>``, and exit with status 2.
"""
from __future__ import annotations

import sys

from ..errors import CoachError
from ..sinks import safe_text  # one filter for everything that reaches the terminal


def status(msg: str) -> None:
    """A progress or status line on stderr (never stdout, which carries results)."""
    try:
        sys.stderr.write(f"coach: {safe_text(msg)}\n")
        sys.stderr.flush()
    except (OSError, ValueError):  # stderr closed: the work goes on regardless
        pass


def warn(msg: str) -> None:
    status(f"warning: {msg}")


def fail(err: CoachError | str) -> int:
    """Print one ``coach: error:`` line and return the exit status 2."""
    try:
        sys.stderr.write(f"coach: error: {safe_text(str(err))}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    return 2
