"""Utterance lag in paced replay and real-time factor per engine, on the real call.

Lag is what an agent feels: how long after a customer stops speaking the coach knows
what was said. Every event in an events file carries call time ``t`` and ``wall`` (wall
seconds since the session started), so in a paced replay ``wall - t`` of an utterance is
its lag (the session starts the wall clock a few milliseconds before the call's clock). The real-time factor is the fast replay's wall time over the call length.

    python benchmarks/bench_lag.py [--engine pocketsphinx] [--seconds 245] [--fast-only]

Data: ``../shared/data/audio/contact_center`` (the real two-channel 8 kHz call: agent and
caller as two files). Prints figures; asserts nothing.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CALL = REPO.parent / "shared" / "data" / "audio" / "contact_center"


def _excerpt(src: Path, dst: Path, seconds: float) -> Path:
    import soundfile as sf
    info = sf.info(str(src))
    frames = int(min(seconds, info.duration) * info.samplerate)
    data, rate = sf.read(str(src), frames=frames, dtype="int16")
    sf.write(str(dst), data, rate, subtype="PCM_16")
    return dst


def replay(agent: Path, customer: Path, engine: str, speed: str, out: Path) -> float:
    cmd = [sys.executable, "-m", "coach.cli", "replay", str(agent), str(customer), "--engine", engine,
           "--speed", speed, "--quiet", "--events", str(out), "--force"]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"replay failed: {proc.stderr.strip().splitlines()[-1]}")
    return time.monotonic() - t0


def lags(events_path: Path) -> dict[str, list[float]]:
    from coach.codec import read_events
    from coach.events import ScoredUtterance
    f = read_events(events_path)
    out: dict[str, list[float]] = {"agent": [], "customer": []}
    for ev, wall in f.events:
        if isinstance(ev, ScoredUtterance):
            out[ev.utterance.speaker.value].append(wall - ev.utterance.end)
    return out


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))] if xs else float("nan")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engine", default="pocketsphinx", help="auto, vosk or pocketsphinx (default)")
    ap.add_argument("--seconds", type=float, default=1e9, help="replay only the first N seconds of the call")
    ap.add_argument("--fast-only", action="store_true", help="skip the paced replay (it takes the call's length)")
    args = ap.parse_args(argv)
    agent, customer = CALL / "Auto_Repairs_40_UTC_agent.wav", CALL / "Auto_Repairs_40_UTC_caller.wav"
    if not agent.exists():
        raise SystemExit(f"{agent} is missing: the benchmark needs ../shared/data beside the checkout")
    with tempfile.TemporaryDirectory(prefix="coach-bench-lag-") as tmp:
        tmpd = Path(tmp)
        if args.seconds < 1e8:
            agent = _excerpt(agent, tmpd / "agent.wav", args.seconds)
            customer = _excerpt(customer, tmpd / "customer.wav", args.seconds)
        import soundfile as sf
        call_s = max(sf.info(str(agent)).duration, sf.info(str(customer)).duration)
        fast = replay(agent, customer, args.engine, "fast", tmpd / "fast.jsonl")
        from coach.codec import read_events
        run_wall = read_events(tmpd / "fast.jsonl").events[-1][1]
        print(f"engine {args.engine}, real call {call_s:.1f} s (two 8 kHz files)")
        print(f"fast replay: {fast:.1f} s with start-up, {run_wall:.1f} s of run: "
              f"real-time factor {run_wall / call_s:.2f} ({call_s / run_wall:.1f}x faster than real time)")
        if args.fast_only:
            return
        paced = replay(agent, customer, args.engine, "realtime", tmpd / "paced.jsonl")
        by = lags(tmpd / "paced.jsonl")
        both = by["agent"] + by["customer"]
        print(f"paced replay: {paced:.1f} s with start-up for {call_s:.1f} s of call")
        for name, xs in (("customer", by["customer"]), ("agent", by["agent"]), ("all", both)):
            if xs:
                print(f"utterance lag ({name}, n={len(xs)}): p50 {_pct(xs, 0.5):.2f} s, p95 {_pct(xs, 0.95):.2f} s, "
                      f"max {max(xs):.2f} s, mean {statistics.fmean(xs):.2f} s  (target p95 <= 2.0 s)")


if __name__ == "__main__":
    main()
