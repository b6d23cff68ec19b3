"""Recognizers in their own processes, for engines whose binding holds the GIL.

Why: PocketSphinx's Python binding holds the GIL while it decodes. Measured on the real
245 s two-channel call, two recognizer threads decoded one at a time (user time equal
to wall time), so paced replay fell behind real time and utterances came out up to a
minute late. One process per channel lets the two decoders use both cores; the
recognizer thread in the coach only sends chunks down a pipe and waits (which releases
the GIL), so the rest of the pipeline is unchanged. Vosk's binding releases the GIL
(cffi calls), so it stays in threads.

The child loads the engine itself from the same :class:`~coach.stt.SttOptions` (models
are loaded once per process, not once per chunk) and speaks a tiny protocol:
``("accept", t, pcm_bytes, rate)`` / ``("finish",)`` / ``("reset",)`` / ``("close",)``,
answering each with a list of events (or an exception to re-raise in the parent).
"""
from __future__ import annotations

import multiprocessing as mp
import os
from typing import Any

import numpy as np

from .errors import CoachError
from .events import AudioChunk, Partial, Speaker, Utterance


def _serve(conn: Any, options: Any, speaker: Speaker) -> None:  # pragma: no cover - runs in the child
    """The child's loop: one recognizer, driven over ``conn`` until it closes."""
    import signal
    # Ctrl-C in a terminal reaches the whole process group: the parent decides how the
    # run ends (it closes the pipe), so the child must not die with a traceback first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        from .stt import open_engine
        rec = open_engine(options).recognizer(speaker)
        conn.send(("ready", None))
    except BaseException as e:  # noqa: BLE001 - reported to the parent
        conn.send(("error", e))
        return
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        try:
            if msg[0] == "accept":
                _, t, pcm, rate = msg
                out: Any = rec.accept(AudioChunk(speaker, t, np.frombuffer(pcm, dtype=np.int16), rate))
            elif msg[0] == "finish":
                out = rec.finish()
            elif msg[0] == "reset":
                rec.reset()
                out = []
            else:
                return
            conn.send(("ok", out))
        except BaseException as e:  # noqa: BLE001
            conn.send(("error", e))


class ProcessRecognizer:
    """A :class:`~coach.stt.Recognizer` whose decoding happens in a child process."""

    def __init__(self, options: Any, speaker: Speaker, sample_rate: int) -> None:
        self.speaker = speaker
        self.sample_rate = sample_rate
        ctx = mp.get_context("spawn")  # no fork of a parent that holds torch's threads
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child, options, speaker), daemon=True,
                                 name=f"coach-stt-{speaker.value}")
        self._proc.start()
        child.close()
        self._call("ready")

    def _call(self, expect: str = "ok", msg: tuple | None = None) -> Any:
        try:
            if msg is not None:
                self._conn.send(msg)
            kind, payload = self._conn.recv()
        except (EOFError, OSError, BrokenPipeError):
            code = self._proc.exitcode
            raise CoachError(f"the {self.speaker.value} speech recognizer process died (exit code {code})",
                             "replay again; if it repeats, run with --engine vosk or report it") from None
        if kind == "error":
            raise payload
        return payload

    def accept(self, chunk: AudioChunk) -> list[Partial | Utterance]:
        pcm = np.ascontiguousarray(chunk.samples, dtype=np.int16).tobytes()
        return self._call("ok", ("accept", chunk.t, pcm, chunk.sample_rate))

    def finish(self) -> list[Utterance]:
        return self._call("ok", ("finish",))

    def reset(self) -> None:
        self._call("ok", ("reset",))

    def close(self) -> None:
        try:
            self._conn.send(("close",))
        except (OSError, BrokenPipeError):
            pass
        self._conn.close()
        self._proc.join(timeout=1.0)
        if self._proc.is_alive():
            self._proc.kill()


class ProcessEngine:
    """Wraps an engine so that each channel's recognizer runs in its own process."""

    def __init__(self, engine: Any, options: Any) -> None:
        self.options = options
        self.name = engine.name
        self.sample_rate = engine.sample_rate
        self.description = engine.description

    def recognizer(self, speaker: Speaker) -> ProcessRecognizer:
        return ProcessRecognizer(self.options, speaker, self.sample_rate)


def wants_processes(engine: Any) -> bool:
    """Whether ``engine`` decodes faster in one process per channel on this machine."""
    return getattr(engine, "name", "") == "pocketsphinx" and (os.cpu_count() or 1) >= 2


__all__ = ["ProcessEngine", "ProcessRecognizer", "wants_processes"]
