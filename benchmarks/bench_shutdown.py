"""How fast `coach live` ends on Ctrl-C (SIGINT) and on SIGTERM, beside a plain Python exit.

An agent who closes the coach waits for it: the recognizers finish what they heard, the
bus drains to the events file, the devices close. The tests only assert that it ends by
itself with a complete events file (a 10 s guard against a hang); this script gives the
speed figure, on real (virtual) devices:

* ``coach live`` runs as the agent runs it, on two PulseAudio null sinks, with
  ``--events``; the customer channel of the escalating sample call plays into its sink;
* the signal arrives either **mid-speech** (the recognizers are decoding) or **after
  silence** (everything heard is already out);
* the time from the signal to the process's exit, and whether the events file ends with
  ``call_end``;
* the **baseline, in the same run**: a Python process that imports what ``coach live``
  imports (the CLI, torch, transformers, sounddevice, PocketSphinx), waits, and is given
  the same signal, leaving through the interpreter's normal exit. That exit is mostly
  CPython tearing down torch; ``coach`` skips it once everything is written
  (``coach.cli.run``), so it can end faster than the baseline.

    python benchmarks/bench_shutdown.py [--repeat 3]

Needs what the tests need (PulseAudio and the ALSA pulse plugin:
``scripts/install_system_deps.sh``). Prints figures; asserts nothing.
"""
from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

# Both signals end it through the interpreter's normal exit (SIGTERM's default action
# would skip the teardown that any clean exit pays, so it is turned into SystemExit).
_BASELINE = ("import coach.cli, coach.session, torch, transformers, sounddevice, pocketsphinx, signal, sys\n"
             "def _term(*_): raise SystemExit(143)\n"
             "signal.signal(signal.SIGTERM, _term)\n"
             "print('ready', file=sys.stderr, flush=True)\n"
             "signal.pause()\n")


class _Proc:
    """A subprocess whose stderr lines are collected on a thread."""

    def __init__(self, cmd: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self) -> None:
        for ln in self.proc.stderr:
            self.lines.append(ln.rstrip("\n"))

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in ln for ln in list(self.lines)):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.proc.kill()
        raise RuntimeError(f"no {text!r} within {timeout:.0f} s; it said: " + " | ".join(self.lines[-5:]))

    def signal_and_time(self, sig: int, limit: float = 30.0) -> float | None:
        """Seconds from ``sig`` to exit; None (and killed) if it ran past ``limit``."""
        t0 = time.monotonic()
        self.proc.send_signal(sig)
        try:
            self.proc.wait(limit)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None
        took = time.monotonic() - t0
        self._t.join(2)
        return took


def _ends_whole(events: Path) -> bool:
    """The events file is complete: every line parses and the last one is call_end."""
    from coach.codec import read_events
    try:
        read_events(events)
    except Exception:  # noqa: BLE001 - any failure means "not whole"; the figure says so
        return False
    lines = events.read_text().splitlines()
    return len(lines) > 1 and json.loads(lines[-1]).get("type") == "call_end"


def _live_once(pa, customer_wav: Path, tmp: Path, sig: int, mid_speech: bool) -> tuple[float | None, bool]:
    events = tmp / f"ev-{time.monotonic_ns()}.jsonl"
    cmd = [sys.executable, "-m", "coach.cli", "live", "--agent-device", "coach_agent",
           "--customer-device", "coach_customer", "--quiet", "--events", str(events)]
    live = _Proc(cmd, pa.environ())
    player = None
    try:
        live.wait_for("listening: ", 180)
        pa.wait_recording("coach_customer")
        time.sleep(1.0)
        player = pa.play("coach_customer", customer_wav, wait=False)
        if mid_speech:
            time.sleep(8.0)     # the customer is talking: utterances in flight
        else:
            player.wait(120)
            time.sleep(3.0)     # everything heard has been decoded and written
        took = live.signal_and_time(sig)
    finally:
        if player is not None and player.poll() is None:
            player.kill()
        if live.proc.poll() is None:
            live.proc.kill()
            live.proc.wait()
    return took, _ends_whole(events)


def _baseline_once(env: dict[str, str], sig: int) -> float | None:
    p = _Proc([sys.executable, "-c", _BASELINE], env)
    p.wait_for("ready", 180)
    time.sleep(0.5)
    return p.signal_and_time(sig)


def _fmt(xs: list[float | None]) -> str:
    ok = [x for x in xs if x is not None]
    hung = len(xs) - len(ok)
    if not ok:
        return f"all {hung} ran past the limit"
    s = f"median {statistics.median(ok):.2f} s, max {max(ok):.2f} s (n={len(ok)})"
    return s + (f", {hung} ran past the limit and were killed" if hung else "")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="runs per signal and moment (default 3)")
    args = ap.parse_args(argv)
    import soundfile as sf
    from pulse import PulseAudio

    pa = PulseAudio().start()
    tmp = Path(tempfile.mkdtemp(prefix="coach-bench-shutdown-"))
    x, rate = sf.read(str(REPO / "coach" / "examples" / "escalating.wav"), dtype="int16")
    customer_wav = tmp / "customer.wav"
    sf.write(str(customer_wav), x[:, 1], rate, subtype="PCM_16")
    results: dict[str, tuple[list, int]] = {}
    base: dict[str, list] = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            name = signal.Signals(sig).name
            base[name] = [_baseline_once(pa.environ(), sig) for _ in range(args.repeat)]
            for mid in (True, False):
                runs = [_live_once(pa, customer_wav, tmp, sig, mid) for _ in range(args.repeat)]
                results[f"{name}, {'mid-speech' if mid else 'after silence'}"] = (
                    [t for t, _ in runs], sum(whole for _, whole in runs))
    finally:
        pa.stop()
    for name, xs in base.items():
        print(f"baseline (same imports, idle) on {name}: {_fmt(xs)}")
    for key, (xs, whole) in results.items():
        sig = key.split(",")[0]
        ok, b = [x for x in xs if x is not None], [x for x in base[sig] if x is not None]
        ratio = (f"; {statistics.median(ok) / statistics.median(b):.1f}x the baseline"
                 if ok and b and statistics.median(b) > 0 else "")
        print(f"coach live, {key}: {_fmt(xs)}{ratio}; events file whole in {whole}/{len(xs)}")


if __name__ == "__main__":
    main()
