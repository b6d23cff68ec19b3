"""A private PulseAudio daemon whose null sinks are capture devices: real audio without a sound card.

Each sink (``coach_agent``, ``coach_customer``) is a ``module-null-sink``; whatever
``play()`` sends to it appears on its ``.monitor`` source, which a generated ALSA config
names as a PCM (``pcm.coach_agent { type pulse; device coach_agent.monitor }``), so
PortAudio (``sounddevice``, ``coach devices``, ``coach live``) lists it as an input
device. ``unload()`` / ``reload()`` make a device vanish and come back.

Nothing touches the user's own sound setup: the daemon, its socket, state and the ALSA
config live in a temp folder and are removed at :meth:`PulseAudio.stop`. Clients find
the daemon through the environment in :attr:`PulseAudio.env`:

* a subprocess: ``subprocess.run([...], env=pulse.environ())``;
* this process: :meth:`PulseAudio.activate` sets ``os.environ`` and re-initialises
  PortAudio (which reads the ALSA config when it initialises); :meth:`stop` undoes it.

As a fixture: ``from pulse import pulse_devices`` in a test module, then take
``pulse_devices`` (one daemon per module, active in this process).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

SINKS = ("coach_agent", "coach_customer")
_ALSA_CONF = "/usr/share/alsa/alsa.conf"  # Debian's system config, included first
_INSTALL = "run `sudo scripts/install_system_deps.sh` (pulseaudio, pulseaudio-utils, libportaudio2, libasound2-plugins)"


class PulseError(RuntimeError):
    """The harness could not start or drive the daemon (the message says why and what to install)."""


class PulseAudio:
    """A private PulseAudio daemon with one null sink per name in ``sinks``."""

    def __init__(self, sinks: tuple[str, ...] = SINKS) -> None:
        self.sinks = tuple(sinks)
        self.dir: Path | None = None
        self.env: dict[str, str] = {}
        self._proc: subprocess.Popen | None = None
        self._modules: dict[str, str] = {}
        self._players: list[subprocess.Popen] = []
        self._saved_env: dict[str, str | None] | None = None

    # -- lifecycle

    def start(self) -> "PulseAudio":
        for tool in ("pulseaudio", "pactl", "paplay"):
            if shutil.which(tool) is None:
                raise PulseError(f"{tool} is not installed; {_INSTALL}")
        if not Path(_ALSA_CONF).is_file():
            raise PulseError(f"{_ALSA_CONF} is missing (libasound2-data); {_INSTALL}")
        self.dir = d = Path(tempfile.mkdtemp(prefix="coach-pulse-"))
        run, home = d / "run", d / "home"
        run.mkdir(mode=0o700)
        home.mkdir()
        # A removed sink must end its monitor's streams, as unplugging a sound card ends an
        # ALSA stream; by default PulseAudio would move them to another source instead.
        (d / "daemon.conf").write_text("rescue-streams = no\n")
        socket = run / "native"
        (d / "client.conf").write_text("autospawn = no\n")
        (d / "default.pa").write_text(f"load-module module-native-protocol-unix auth-anonymous=1 socket={socket}\n")
        (d / "asound.conf").write_text(f"<{_ALSA_CONF}>\n" + "".join(
            f'pcm.{s} {{\n  type pulse\n  device {s}.monitor\n  hint {{ show on; description "{s} (test sink monitor)" }}\n}}\n'
            for s in self.sinks))
        self.env = {
            "PULSE_SERVER": f"unix:{socket}",
            "PULSE_CLIENTCONFIG": str(d / "client.conf"),  # never autospawn the user's daemon
            "PULSE_COOKIE": str(d / "cookie"),
            "ALSA_CONFIG_PATH": str(d / "asound.conf"),
        }
        daemon_env = {**os.environ, **self.env, "PULSE_CONFIG": str(d / "daemon.conf"), "HOME": str(home),
                      "XDG_RUNTIME_DIR": str(run), "PULSE_RUNTIME_PATH": str(run),
                      "PULSE_STATE_PATH": str(home / "state"), "XDG_CONFIG_HOME": str(home / "config")}
        daemon_env.pop("DBUS_SESSION_BUS_ADDRESS", None)
        log = open(d / "daemon.log", "wb")
        # -n: no system default.pa; -F: only our modules. Running as root works without
        # --system (it only warns), and keeps the daemon a plain child we can kill.
        self._proc = subprocess.Popen(
            ["pulseaudio", "--daemonize=no", "--system=false", "-n", "-F", str(d / "default.pa"),
             "--exit-idle-time=-1", "--disallow-exit", "--disable-shm=true", "--use-pid-file=false",
             "--realtime=false", "--high-priority=false", "--log-target=stderr"],
            env=daemon_env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        try:
            deadline = time.monotonic() + 15
            while True:
                if self._proc.poll() is not None:
                    self._fail(f"pulseaudio exited with status {self._proc.returncode}")
                if socket.exists() and self._pactl("info", check=False).returncode == 0:
                    break
                if time.monotonic() > deadline:
                    self._fail("pulseaudio did not answer within 15 s")
                time.sleep(0.05)
            for s in self.sinks:
                self.reload(s)
        except BaseException:
            self.stop()
            raise
        return self

    def _fail(self, why: str) -> None:
        tail = ""
        if self.dir is not None and (self.dir / "daemon.log").exists():
            lines = (self.dir / "daemon.log").read_text(errors="replace").splitlines()
            tail = " | ".join(ln for ln in lines if ln.startswith("E:"))[-600:]
        self.stop()
        raise PulseError(f"{why}: {tail or 'no error logged'}; {_INSTALL}")

    def stop(self) -> None:
        """Kill the players and the daemon, undo :meth:`activate`, remove the temp folder."""
        for p in self._players:
            if p.poll() is None:
                p.kill()
            p.wait()
        self._players.clear()
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.terminate()
                try:
                    self._proc.wait(5)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
            self._proc = None
        self.deactivate()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> "PulseAudio":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- clients

    def environ(self) -> dict[str, str]:
        """The environment for a subprocess that should see the test devices."""
        return {**os.environ, **self.env}

    def activate(self) -> None:
        """Point this process at the daemon, re-initialising PortAudio if it is loaded
        (PortAudio lists devices, and ALSA reads its config, only when it initialises)."""
        if self._saved_env is None:
            self._saved_env = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        _reinit_portaudio()

    def deactivate(self) -> None:
        if self._saved_env is None:
            return
        for k, v in self._saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        self._saved_env = None
        _reinit_portaudio()

    def _pactl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(["pactl", *args], env=self.environ(), capture_output=True, text=True, timeout=10,
                              check=False)
        if check and proc.returncode != 0:
            raise PulseError(f"pactl {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc

    # -- driving the devices

    def play(self, sink: str, wav: str | os.PathLike, wait: bool = True) -> subprocess.Popen:
        """Play a sound file into ``sink`` (in real time); ``wait=False`` returns at once."""
        p = subprocess.Popen(["paplay", f"--device={sink}", str(wav)], env=self.environ(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._players.append(p)
        if wait:
            _, err = p.communicate(timeout=120)
            if p.returncode != 0:
                raise PulseError(f"paplay into {sink} failed: {err.decode(errors='replace').strip()}")
        return p

    def unload(self, sink: str) -> None:
        """Make the device vanish: its null sink (and so the monitor source) is removed."""
        self._pactl("unload-module", self._modules.pop(sink))

    def reload(self, sink: str) -> None:
        """(Re)create the sink; the ALSA device of the same name works again."""
        out = self._pactl("load-module", "module-null-sink", f"sink_name={sink}",
                          f"sink_properties=device.description={sink}").stdout
        self._modules[sink] = out.strip()

    def wait_recording(self, sink: str, timeout: float = 30.0) -> None:
        """Wait until a client records from ``sink``'s monitor (its source is RUNNING):
        a process that says it is listening may still be opening its streams."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for ln in self._pactl("list", "short", "sources").stdout.splitlines():
                cols = ln.split("\t")
                if len(cols) >= 5 and cols[1] == f"{sink}.monitor" and cols[4].strip() == "RUNNING":
                    return
            time.sleep(0.1)
        raise PulseError(f"nothing recorded from {sink}.monitor within {timeout:.0f} s")

    def sources(self) -> list[str]:
        return [ln.split("\t")[1] for ln in self._pactl("list", "short", "sources").stdout.splitlines() if "\t" in ln]


def _reinit_portaudio() -> None:
    sd = sys.modules.get("sounddevice")
    if sd is not None:
        sd._terminate()
        sd._initialize()


@pytest.fixture(scope="module")
def pulse_devices():
    """A running :class:`PulseAudio` with ``coach_agent`` and ``coach_customer``, active in this
    process for the module's tests (the environment and PortAudio are restored afterwards)."""
    pa = PulseAudio()
    try:
        pa.start()
    except PulseError as e:
        pytest.fail(f"the PulseAudio test harness could not start: {e}", pytrace=False)
    pa.activate()
    try:
        yield pa
    finally:
        pa.stop()
