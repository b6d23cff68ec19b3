"""How fast `coach live` ends on Ctrl-C (SIGINT) and on SIGTERM, beside a plain Python exit.

An agent who closes the coach waits for it: the recognizers finish what they heard, the
bus drains to the events file, the devices close. The tests only assert that it ends by
itself with a complete events file (a 10 s guard against a hang); this script gives the
speed figure, on real (virtual) devices:

* ``coach live`` runs as the agent runs it, on two PulseAudio null sinks, with
  ``--events``; the customer channel of the escalating sample call plays into its sink;
* the signal arrives either **mid-speech** (halfway through the first customer turn
  that starts 6 s or more into the call, from the sample's script: the recognizers are
  decoding it) or **after silence** (3 s after the audio ends: everything heard is out);
* the time from the signal to the process's exit, its exit status (130 for SIGINT, 143
  for SIGTERM, no traceback), and whether the events file ends with ``call_end``;
* the **baseline, in the same run**: a Python process that imports what ``coach live``
  imports (the CLI, torch, transformers, sounddevice, PocketSphinx), waits, and is given
  the same signal, leaving through the interpreter's normal exit. That exit is mostly
  CPython tearing down torch; ``coach`` skips it once everything is written
  (``coach.cli.run``), so it can end faster than the baseline.

    python benchmarks/bench_shutdown.py [--repeat 3] [--normal-exit]

``--normal-exit`` runs ``coach.cli.main`` and leaves through the interpreter's own exit
(what the command did before ``run`` existed), to measure what skipping it saves.

Needs what the tests need (PulseAudio and the ALSA pulse plugin:
``scripts/install_system_deps.sh``). Prints figures; asserts nothing.
"""
from __future__ import annotations

import argparse
import json
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from procs import Watched  # noqa: E402 - tests/ is on the path only from here

# Both signals end it through the interpreter's normal exit (SIGTERM's default action
# would skip the teardown that any clean exit pays, so it is turned into SystemExit).
_BASELINE = ("import coach.cli, coach.session, torch, transformers, sounddevice, pocketsphinx, signal, sys\n"
             "def _term(*_): raise SystemExit(143)\n"
             "signal.signal(signal.SIGTERM, _term)\n"
             "print('ready', file=sys.stderr, flush=True)\n"
             "signal.pause()\n")


class _Proc(Watched):
    """A watched subprocess (tests/procs.py) that can be timed to its exit."""

    def signal_and_time(self, sig: int, limit: float = 30.0) -> float | None:
        """Seconds from ``sig`` to exit; None (and killed) if it ran past ``limit``."""
        watchdog = threading.Timer(limit, self.proc.kill)
        watchdog.daemon = True
        t0 = time.monotonic()
        self.proc.send_signal(sig)
        watchdog.start()
        self.proc.wait()        # blocking: no polling interval in the figure
        took = time.monotonic() - t0
        watchdog.cancel()
        self._t.join(2)
        return None if self.proc.returncode == -signal.SIGKILL else took

    def clean_exit(self, sig: int) -> bool:
        """Exit status 128 + signal number, as coach promises, and no traceback."""
        return self.proc.returncode == 128 + sig and not any("Traceback" in ln for ln in self.lines)


def _ends_whole(events: Path) -> bool:
    """The events file is complete: every line parses and the last one is call_end."""
    from coach.codec import read_events
    try:
        read_events(events)
    except Exception:  # noqa: BLE001 - any failure means "not whole"; the figure says so
        return False
    lines = events.read_text().splitlines()
    return len(lines) > 1 and json.loads(lines[-1]).get("type") == "call_end"


_NORMAL_EXIT = "import sys\nfrom coach.cli import main\nif __name__ == '__main__':\n    sys.exit(main())\n"


def _live_once(pa, customer_wav: Path, tmp: Path, sig: int, speech_at: float | None,
               normal_exit: bool) -> tuple[float | None, bool, bool]:
    """One `coach live` run: (seconds to exit, exit status right, events file whole)."""
    events = tmp / f"ev-{time.monotonic_ns()}.jsonl"
    entry = ["-c", _NORMAL_EXIT] if normal_exit else ["-m", "coach.cli"]
    cmd = [sys.executable, *entry, "live", "--agent-device", "coach_agent",
           "--customer-device", "coach_customer", "--quiet", "--events", str(events)]
    live = _Proc(cmd, env=pa.environ())
    player = None
    try:
        live.wait_for(r"listening: ", 180)
        pa.wait_recording("coach_customer")
        time.sleep(1.0)
        player = pa.play("coach_customer", customer_wav, wait=False)
        if speech_at is not None:
            time.sleep(speech_at)   # the customer is talking: an utterance is being decoded
        else:
            player.wait(120)
            time.sleep(3.0)     # everything heard has been decoded and written
        took = live.signal_and_time(sig)
    finally:
        if player is not None and player.poll() is None:
            player.kill()
        live.kill()
    return took, live.clean_exit(sig), _ends_whole(events)


def _baseline_once(env: dict[str, str], sig: int) -> float | None:
    p = _Proc([sys.executable, "-c", _BASELINE], env=env)
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
    ap.add_argument("--normal-exit", action="store_true",
                    help="run coach.cli.main with the interpreter's own exit (the command before cli.run)")
    args = ap.parse_args(argv)
    import soundfile as sf
    from pulse import PulseAudio

    pa = PulseAudio().start()
    tmp = Path(tempfile.mkdtemp(prefix="coach-bench-shutdown-"))
    call = REPO / "coach" / "examples" / "escalating.wav"
    turn = next(seg for seg in json.loads(call.with_suffix(".json").read_text())["segments"]
                if seg["speaker"] == "customer" and seg["start"] >= 6.0)
    speech_at = (turn["start"] + turn["end"]) / 2
    x, rate = sf.read(str(call), dtype="int16")
    customer_wav = tmp / "customer.wav"
    sf.write(str(customer_wav), x[:, 1], rate, subtype="PCM_16")
    results: dict[str, tuple[list, int, int]] = {}
    base: dict[str, list] = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            name = signal.Signals(sig).name
            base[name] = [_baseline_once(pa.environ(), sig) for _ in range(args.repeat)]
            for mid in (True, False):
                runs = [_live_once(pa, customer_wav, tmp, sig, speech_at if mid else None, args.normal_exit)
                        for _ in range(args.repeat)]
                moment = f"mid-speech ({speech_at:.1f} s into the call)" if mid else "after silence"
                results[f"{name}, {moment}"] = ([t for t, _, _ in runs], sum(ok for _, ok, _ in runs),
                                                sum(whole for _, _, whole in runs))
    finally:
        pa.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print("entry: " + ("coach.cli.main, the interpreter's own exit (--normal-exit)" if args.normal_exit
                       else "python -m coach.cli (cli.run, as the coach command)"))
    for name, xs in base.items():
        print(f"baseline (same imports, idle) on {name}: {_fmt(xs)}")
    for key, (xs, clean, whole) in results.items():
        sig = key.split(",")[0]
        ok, b = [x for x in xs if x is not None], [x for x in base[sig] if x is not None]
        ratio = (f"; {statistics.median(ok) / statistics.median(b):.1f}x the baseline"
                 if ok and b and statistics.median(b) > 0 else "")
        print(f"coach live, {key}: {_fmt(xs)}{ratio}; exit status right and no traceback in {clean}/{len(xs)}; "
              f"events file whole in {whole}/{len(xs)}")


if __name__ == "__main__":
    main()
