"""The event bus: every consumer of a call's events gets its own thread and bounded queue.

Why: the coach thread must never wait on a consumer. A terminal that is paused or
piped into ``head``, a full disk, a slow overlay or a dead supervisor webhook used to
stall recognition or kill the run (the printer ran before the file writer, so a broken
stdout lost all but one event). Here a publish is a non-blocking put per sink; a full
queue drops the event *for that sink only* and counts it; a sink that raises is marked
failed, reported at the end, and the others carry on (pipecat's observers, without the
async machinery). Events are stamped with ``wall``, seconds since the bus started, so
lag behind call time can be measured in paced replay and live.
"""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable, Protocol

from .events import Event

_POLL_S = 0.05


class Sink(Protocol):
    """A consumer of events. Called from its own thread only, in publish order."""

    name: str

    def handle(self, ev: Event, wall: float) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class SinkReport:
    """What happened to one sink: events handled, dropped on overload, lost after a failure."""

    name: str
    handled: int
    dropped: int
    lost: int
    error: str | None  # why the sink stopped, or None
    finished: bool  # False when it was still busy at the close deadline

    @property
    def ok(self) -> bool:
        return self.error is None and self.dropped == 0 and self.lost == 0 and self.finished


class _Worker:
    def __init__(self, sink: Sink, maxsize: int) -> None:
        self.sink = sink
        self.q: queue.Queue = queue.Queue(maxsize=maxsize)
        self.handled = 0
        self.dropped = 0
        self.lost = 0
        self.error: str | None = None
        self.closing = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"coach-sink-{sink.name}", daemon=True)

    def put(self, item: tuple[Event, float]) -> None:
        if self.error is not None:
            self.lost += 1
            return
        try:
            self.q.put_nowait(item)
        except queue.Full:
            self.dropped += 1

    def _run(self) -> None:
        try:
            while True:
                try:
                    ev, wall = self.q.get(timeout=_POLL_S)
                except queue.Empty:
                    if self.closing.is_set():
                        break
                    continue
                if self.error is not None:
                    self.lost += 1
                    continue
                try:
                    self.sink.handle(ev, wall)
                    self.handled += 1
                except Exception as e:  # noqa: BLE001 - any sink failure is reported, never raised
                    self.error = _describe(e)
                    self.lost += 1
        finally:
            try:
                self.sink.close()
            except Exception as e:  # noqa: BLE001
                if self.error is None:
                    self.error = _describe(e)

    def report(self) -> SinkReport:
        alive = self.thread.is_alive()
        lost = self.lost + (self.q.qsize() if alive else 0)
        return SinkReport(self.sink.name, self.handled, self.dropped, lost, self.error, not alive)


def _describe(e: BaseException) -> str:
    msg = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return f"{msg}" if isinstance(e, OSError) else f"{type(e).__name__}: {msg}"


class Bus:
    """Fans events out to sinks; ``publish`` never blocks and never raises."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._t0 = clock()
        self._workers: list[_Worker] = []
        self._started = False
        self._closed = False

    def add(self, sink: Sink, maxsize: int = 4096) -> None:
        """Attach a sink with its own queue of ``maxsize`` events (its drop threshold)."""
        if self._started:
            raise RuntimeError("add sinks before the bus starts")
        self._workers.append(_Worker(sink, maxsize))

    def start(self) -> None:
        """Start the sink threads and the wall clock (``wall`` counts from here)."""
        if not self._started:
            self._started = True
            self._t0 = self._clock()
            for w in self._workers:
                w.thread.start()

    def wall(self) -> float:
        return self._clock() - self._t0

    def publish(self, ev: Event) -> None:
        if not self._started:
            self.start()
        if self._closed:
            return
        item = (ev, self.wall())
        for w in self._workers:
            w.put(item)

    def close(self, timeout: float = 1.5) -> list[SinkReport]:
        """Let every sink drain and close, waiting at most ``timeout`` seconds in all."""
        self._closed = True
        if not self._started:
            self.start()
        for w in self._workers:
            w.closing.set()
        deadline = time.monotonic() + timeout
        for w in self._workers:
            w.thread.join(max(0.0, deadline - time.monotonic()))
        return [w.report() for w in self._workers]


__all__ = ["Bus", "Sink", "SinkReport"]
