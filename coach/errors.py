"""One exception type for everything the user can fix.

Library code raises :class:`CoachError` with a message naming the cause and the fix;
the CLI prints it as one line and exits non-zero. Nothing else talks to the terminal.
"""
from __future__ import annotations


class CoachError(Exception):
    """A problem with the user's input, configuration or environment.

    ``str(err)`` is a single line: what is wrong, then what to do about it.
    """

    def __init__(self, cause: str, fix: str = "") -> None:
        self.cause = cause
        self.fix = fix
        super().__init__(f"{cause}. {fix}".strip() if fix else cause)


class AudioError(CoachError):
    """Unreadable, empty, truncated or unusable audio."""


class ConfigError(CoachError):
    """A config file (playbook, training, coach) that is missing or invalid."""


class ModelError(CoachError):
    """A model folder that is missing, incomplete or of the wrong kind."""


class TranscriptError(CoachError):
    """A transcript JSON that does not follow the documented format."""


class DataError(CoachError):
    """A labelled data file with missing columns, unknown labels or bad encoding."""
