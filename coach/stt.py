"""Speech-to-text behind one small streaming interface.

An :class:`Engine` holds the one shared acoustic model (loaded once); it hands out one
:class:`Recognizer` per speaker channel, as Vosk's own examples do. A recognizer is fed
:class:`~coach.events.AudioChunk` objects in call order and returns partial words and
finished utterances with per-word call times and confidences.

Engines: Vosk (preferred; model found from config, ``--vosk-model``, ``models/`` or
``VOSK_MODEL``) and PocketSphinx (its bundled US-English model, the offline fallback).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from .events import AudioChunk, Partial, Speaker, Utterance


@dataclass(frozen=True)
class SttOptions:
    """How to pick and configure the recognizer.

    ``engine``: "auto" (Vosk if a model is found, else PocketSphinx), "vosk" or
    "pocketsphinx". ``vosk_model``: a model folder; None searches the usual places.
    """

    engine: str = "auto"
    vosk_model: str | None = None
    partials: bool = True


class Recognizer(Protocol):
    """One streaming recognizer for one channel. Not thread-safe; one thread feeds it."""

    speaker: Speaker
    sample_rate: int  # the rate accept() expects; the audio layer resamples to it

    def accept(self, chunk: AudioChunk) -> list[Partial | Utterance]:
        """Feed the next chunk; return partials and any utterances it finished."""
        ...

    def finish(self) -> list[Utterance]:
        """Flush: return the last utterance(s) once the audio has ended."""
        ...

    def reset(self) -> None:
        """Forget all state so the recognizer can start a new call."""
        ...


class Engine(Protocol):
    """A loaded speech model; shared by all channels of all calls."""

    name: str  # "vosk" or "pocketsphinx"
    sample_rate: int
    description: str  # one line for the user: which model ran and how to get a better one

    def recognizer(self, speaker: Speaker) -> Recognizer: ...
