"""The composition root: one validated :class:`Settings` in, a running coach out.

Why one place: replay, the demo, and later live capture, batch QA and Ray workers must
build the same thing (engine, classifier, playbook, pipeline, sinks) the same way, so
a call replayed for QA goes through exactly what the agent saw. The CLI only turns
flags into ``Settings``, hands over its streams, and prints what comes back.

Loading order is chosen so that bad input fails in well under a second, before the
slow models load: settings, playbook, the call's header or transcript, the events path,
then the speech engine and the classifier.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable

from .bus import Bus, SinkReport
from .errors import ConfigError
from .pipeline import CallSummary, Pipeline, ReplayOptions, Scorer, Speed

_VERSION = "0.1.0"


@dataclass(frozen=True)
class Settings:
    """Everything one coaching session needs, from flags or a config file."""

    call: str                               # recording (WAV/FLAC/...) or transcript .json
    customer_file: str | None = None        # the customer's recording when the call is two files
    agent_channel: str = "left"             # stereo channel of the agent
    mono_speaker: str = "customer"          # who talks in a mono recording
    engine: str = "auto"                    # auto | vosk | pocketsphinx
    vosk_model: str | None = None
    model: str | None = None                # classifier folder or name
    playbook: str | None = None             # playbook YAML (None: the located default)
    speed: str = "fast"                     # fast | realtime | a rate such as 2x
    partials: bool = False                  # compute partial transcripts (slower)
    events: str | None = None               # events file (JSON lines) to create
    force: bool = False                     # replace an existing events file
    timeline: bool = True                   # print the timeline
    trajectory: bool = False                # show the customer's trajectory in it
    progress: bool = False                  # progress bar (when the timeline is off)
    color: bool = False
    processes: bool | None = None           # one recognizer process per channel (None: where it helps)
    # Live capture (`coach live`): sound devices instead of a recording.
    live: bool = False
    agent_device: str | None = None         # the agent's microphone: name or index
    customer_device: str | None = None      # the call audio (the customer): name or index
    device: str | None = None               # one stereo device carrying both sides
    record: str | None = None               # also record the call to this new two-channel WAV
    tui: bool = False                       # the terminal view instead of the timeline
    host: str = "127.0.0.1"                 # overlay address (another one needs a token)
    port: int | None = None                 # overlay port; None: no overlay, 0: any free port
    token: str | None = None
    supervisor: str | None = None           # webhook URL for critical prompts (e.g. `coach board`)
    name: str | None = None                 # how this session shows on the supervisor board

    def validate(self) -> "Settings":
        """Refuse impossible combinations with one-line errors; returns self."""
        if self.live:
            if not (self.device or (self.agent_device and self.customer_device)):
                raise ConfigError("no capture devices given",
                                  "pass --agent-device and --customer-device, or one stereo --device (see `coach devices`)")
            if self.device and (self.agent_device or self.customer_device):
                raise ConfigError("both --device and --agent-device/--customer-device given", "use one or the other")
            if self.port is not None and not 0 <= int(self.port) <= 65535:
                raise ConfigError(f"port {self.port} is out of range", "use 1-65535, or 0 for any free port")
            if self.token is not None and len(self.token) < 16:
                raise ConfigError("the token is shorter than 16 characters", "use a longer, random token")
            if self.name is not None and (not self.name.strip() or len(self.name) > 128 or not self.name.isprintable()):
                raise ConfigError(f"session name {self.name!r} is empty, too long or has control characters",
                                  "use up to 128 printable characters")
        elif not str(self.call or "").strip():
            raise ConfigError("no call given", "pass a recording or a transcript .json")
        if self.agent_channel not in ("left", "right"):
            raise ConfigError(f"agent_channel {self.agent_channel!r} is not left or right", "use left or right")
        if self.mono_speaker not in ("agent", "customer"):
            raise ConfigError(f"mono_speaker {self.mono_speaker!r} is not agent or customer", "use agent or customer")
        if self.engine not in ("auto", "vosk", "pocketsphinx"):
            raise ConfigError(f"unknown speech engine {self.engine!r}", "use auto, vosk or pocketsphinx")
        self.replay_options()
        return self

    def replay_options(self) -> ReplayOptions:
        v = self.speed.strip().lower()
        if v == "fast":
            return ReplayOptions(speed=Speed.FAST, partials=self.partials)
        if v == "realtime":
            return ReplayOptions(speed=Speed.REALTIME, partials=self.partials)
        try:
            rate = float(v[:-1] if v.endswith("x") else v)
        except ValueError:
            rate = float("nan")
        if not math.isfinite(rate) or not 0.01 <= rate <= 1000:
            raise ConfigError(f"speed {self.speed!r} is not fast, realtime or a rate between 0.01x and 1000x",
                              "use e.g. --speed realtime or --speed 2x")
        return ReplayOptions(speed=Speed.REALTIME, rate=rate, partials=self.partials)


@dataclass
class SessionResult:
    summary: CallSummary
    sinks: list[SinkReport] = field(default_factory=list)
    events_path: Path | None = None
    events_written: int = 0


class Session:
    """Builds and runs one call. ``stop()`` is safe from a signal handler or another thread.

    ``status`` receives short lines about what is being loaded (start-up takes seconds);
    ``stdout``/``stderr`` are where the timeline and the progress bar go.
    """

    def __init__(self, settings: Settings, *, stdout: IO[str] | None = None, stderr: IO[str] | None = None,
                 status: Callable[[str], None] = lambda msg: None) -> None:
        self.settings = settings.validate()
        self.stdout = stdout
        self.stderr = stderr
        self.status = status
        self._pipeline: Pipeline | None = None
        self._stop = threading.Event()
        self.source = None
        self.engine = None
        self.classifier = None
        self.playbook = None
        self.events_path: Path | None = None
        self.overlay = None  # coach.overlay.OverlayServer while live with --port
        self.on_heard: Callable | None = None  # benchmarks: see Pipeline.on_heard

    # -- building

    def _inputs(self) -> list[str | None]:
        s = self.settings
        inputs: list[str | None] = [s.call, s.customer_file, self.playbook.source if self.playbook else s.playbook]
        if s.model:
            inputs.append(s.model)
        return inputs

    def load(self) -> "Session":
        """Validate the inputs and load the models (the slow part comes last)."""
        from .audio import probe
        from .playbook import load_playbook
        from .sinks import check_events_path
        from .sources import open_source
        from .transcript import looks_like_transcript

        s = self.settings
        self.playbook = load_playbook(s.playbook)
        if s.live:
            return self._load_live()
        is_transcript = looks_like_transcript(s.call)
        if is_transcript:
            self.source = open_source(s.call, s.customer_file)  # opened: parsed and validated
        else:
            for p in (s.call, s.customer_file):
                if p is not None:
                    probe(p)  # a bad file fails here, before seconds of model loading
        if s.events:
            self.events_path = check_events_path(s.events, self._inputs(), force=s.force)
        if not is_transcript:
            self._load_engine()
            self.source = open_source(s.call, s.customer_file, agent_channel=s.agent_channel,
                                      mono_speaker=s.mono_speaker, sample_rate=self.engine.sample_rate)
        assert self.source is not None
        for w in self.source.warnings:
            self.status(f"warning: {w}")
        self.status(f"loading classifier ({s.model or 'escalation-minilm'})...")
        from .classifier import load_classifier
        self.classifier = load_classifier(s.model)
        self._check_playbook()
        return self

    def _check_playbook(self) -> None:
        """Warn when the model's thresholds undo the playbook's corroboration (see
        ``coach.playbook.weak_corroborations``): a retrained model can move them."""
        from .playbook import weak_corroborations
        assert self.playbook is not None and self.classifier is not None
        for w in weak_corroborations(self.playbook, self.classifier.config.thresholds):
            self.status(f"warning: {w}")

    def _load_engine(self) -> None:
        from .stt import SttOptions, open_engine
        from .workers import ProcessEngine, wants_processes
        s = self.settings
        self.status(f"loading speech engine ({s.engine})...")
        stt_options = SttOptions(engine=s.engine, vosk_model=s.vosk_model, partials=s.partials)
        self.engine = open_engine(stt_options)
        self.status(f"speech engine: {self.engine.description}")
        processes = wants_processes(self.engine) if s.processes is None else s.processes
        if processes:
            self.engine = ProcessEngine(self.engine, stt_options)

    def _load_live(self) -> "Session":
        """Live capture: devices checked, recording and events file created, overlay up,
        before the classifier loads, so a wrong device name fails in a second."""
        from .capture import DeviceSource
        from .sinks import check_events_path
        s = self.settings

        def dev(spec: str | None) -> int | str | None:
            return int(spec) if spec is not None and spec.strip().isdigit() else spec

        if s.events:
            self.events_path = check_events_path(s.events, [s.record, s.playbook, s.model], force=s.force)
        if s.record:
            from .sinks import same_file
            if any(p and same_file(Path(s.record), Path(p)) for p in (s.playbook, s.model, s.events)):
                raise ConfigError(f"--record {s.record} is one of the session's other files",
                                  "record to a new file")
        if s.supervisor:
            from .supervisor import check_url
            check_url(s.supervisor)
        if s.port is not None:
            from .overlay import check_binding
            check_binding(s.host, s.token)
        self._load_engine()
        left = 0 if s.agent_channel == "left" else 1
        one = s.device is not None
        self.source = DeviceSource(dev(s.device if one else s.agent_device), None if one else dev(s.customer_device),
                                   agent_channel=left if one else None, customer_channel=1 - left if one else None,
                                   sample_rate=self.engine.sample_rate, record=s.record, force=s.force,
                                   on_status=self.status)
        self.source.open()
        if s.port is not None:
            from .overlay import OverlayServer
            self.overlay = OverlayServer(s.host, int(s.port), s.token).start()
            url = self.overlay.url + (f"?token={s.token}" if s.token else "")
            self.status(f"overlay: {url}  (dock it beside the softphone)")
        self.status(f"loading classifier ({s.model or 'escalation-minilm'})...")
        from .classifier import load_classifier
        self.classifier = load_classifier(s.model)
        self._check_playbook()
        return self

    def close(self) -> None:
        """Stop what outlives a run (the overlay server, a live source and its recording,
        even when loading failed half-way); safe to call twice."""
        if self.settings.live and self.source is not None:
            self.source.close()
        if self.overlay is not None:
            self.overlay.stop(0.5)
            self.overlay = None

    def capture_report(self) -> str | None:
        """One line on what live capture lost (drops, overflows, device losses), or None."""
        stats = getattr(self.source, "stats", None)
        if not self.settings.live or stats is None:
            return None
        parts = []
        for st in stats().values():
            bad = [f"{n} {what}" for n, what in ((st.dropped_blocks, "blocks dropped (the coach fell behind)"),
                                                (st.overflows, "input overflows"), (st.losses, "losses"),
                                                (st.reopens, "reopens")) if n]
            if bad:
                parts.append(f"{st.device}: " + ", ".join(bad))
        return "; ".join(parts) or "capture: nothing dropped, no device lost"

    def _sinks(self, bus: Bus) -> None:
        from .sinks import JsonlSink, Progress, Timeline
        s = self.settings
        if s.tui and self.stdout is not None:
            from .tui import TuiSink
            bus.add(TuiSink(self.stdout, color=s.color), maxsize=4096)
        elif s.timeline and self.stdout is not None:
            bus.add(Timeline(self.stdout, color=s.color, show_trajectory=s.trajectory, partials=s.live),
                    maxsize=4096)
        if self.overlay is not None:
            from .overlay import OverlaySink
            self.overlay.clock = bus.wall
            bus.add(OverlaySink(self.overlay), maxsize=4096)
        if s.supervisor:
            import os
            import socket
            from .supervisor import WebhookSink
            name = s.name or f"{socket.gethostname()}-{os.getpid()}"
            bus.add(WebhookSink(s.supervisor, name, token=s.token), maxsize=1024)
        if self.events_path is not None:
            meta = {
                "coach_version": _VERSION,
                "call": self.source.description if s.live else str(s.call),
                "customer_file": s.customer_file,
                "engine": getattr(self.engine, "description", "transcript"),
                "playbook": self.playbook.source if self.playbook else None,
                "speed": s.speed,
                "started_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            }
            self._jsonl = JsonlSink(self.events_path, meta, partials=s.partials, force=s.force)
            bus.add(self._jsonl, maxsize=1 << 16)
        if s.progress and self.stderr is not None:
            bus.add(Progress(self.stderr, self.source.duration), maxsize=256)

    # -- running

    def run(self) -> SessionResult:
        """Run the call to its end (or until :meth:`stop`); sinks are drained and closed."""
        if self.source is None:
            self.load()
        s = self.settings
        self._jsonl = None
        bus = Bus()
        self._sinks(bus)
        self.status(f"listening: {self.source.description}; Ctrl-C ends the call" if s.live
                    else f"replaying {self.source.description}")
        bus.start()
        self._pipeline = Pipeline(scorer=Scorer(self.classifier, self.playbook.min_word_conf,
                                                self.playbook.min_content_words), playbook=self.playbook,
                                  sink=bus.publish, engine=self.engine, options=s.replay_options())
        self._pipeline.on_heard = self.on_heard
        if self._stop.is_set():
            self._pipeline.stop()
        try:
            summary = self._pipeline.run(self.source)
        finally:
            reports = bus.close(timeout=1.5)
        return SessionResult(summary, reports, self.events_path, self._jsonl.count if self._jsonl else 0)

    def stop(self) -> None:
        self._stop.set()
        if self._pipeline is not None:
            self._pipeline.stop()


def settings_from(**kw) -> Settings:
    """Settings from keyword arguments, ignoring unknown keys (CLI namespaces carry more)."""
    names = {f.name for f in dataclasses.fields(Settings)}
    return Settings(**{k: v for k, v in kw.items() if k in names})


__all__ = ["Session", "SessionResult", "Settings", "settings_from"]
