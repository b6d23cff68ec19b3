"""Peak memory of streaming a call from disk, for a short and a long call.

Writes a 5-minute and a 60-minute stereo 8 kHz call (speech-like noise bursts taking
turns on the two channels) to a temporary folder, then for each runs a fresh Python
process that streams the whole file through ``FileSource(...).chunks()`` (read in
blocks, resampled to 16 kHz, cut into 100 ms chunks) and reports its peak RSS. Memory
is flat when the long call costs about what the short one does: target ratio
60-min / 5-min <= 1.2. Before streaming, ``load_call`` on a 60-minute call peaked at
about 2.4 GB; ``--load-call`` measures that path too, for contrast.

    python benchmarks/bench_memory.py [--minutes 5 60] [--load-call] [--pipeline [--engine pocketsphinx]]

Prints figures only; nothing here asserts timing or memory.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RATE = 8000
TARGET_RATIO = 1.2



class _TurnRecognizer:
    """A cheap stand-in recognizer for ``--pipeline``: one utterance per 5 s of audio.

    It keeps the speech decoder's cost out of a memory benchmark (PocketSphinx would
    take ~15 minutes on the 60-minute call) while everything else runs for real:
    source, queues, merge and clock, the shipped classifier, trajectory, playbook, bus
    and an events file. ``--engine pocketsphinx`` swaps in the real decoder.
    """

    sample_rate = 16000

    def __init__(self, speaker):
        self.speaker, self.fed, self.next_end = speaker, 0.0, 5.0

    def accept(self, chunk):
        from coach.events import Utterance, Word
        self.fed = chunk.t + chunk.duration
        out = []
        if self.fed >= self.next_end:
            s, e = self.next_end - 2.0, self.next_end
            words = tuple(Word(w, s + i * 0.4, s + (i + 1) * 0.4, 0.9) for i, w in enumerate("i want my refund".split()))
            out.append(Utterance(self.speaker, s, e, "i want my refund", words, 0.9, -20.0))
            self.next_end += 5.0
        return out

    def finish(self):
        return []

    def reset(self):
        pass


class _TurnEngine:
    name = "turns"
    sample_rate = 16000
    description = "stand-in recognizer (one utterance per 5 s)"

    def recognizer(self, speaker):
        return _TurnRecognizer(speaker)


def _run_pipeline(path: str, engine_name: str) -> int:
    """The full replay path (what `coach replay --quiet --events` runs), minus the terminal."""
    import os
    from coach.bus import Bus
    from coach.classifier import load_classifier
    from coach.pipeline import Pipeline, Scorer
    from coach.playbook import load_playbook
    from coach.sinks import JsonlSink
    from coach.sources import FileSource
    engine = _TurnEngine()
    if engine_name != "turns":
        from coach.stt import SttOptions, open_engine
        engine = open_engine(SttOptions(engine=engine_name, partials=False))
    playbook = load_playbook()
    scorer = Scorer(load_classifier(), playbook.min_word_conf)
    events = path + ".events.jsonl"
    if os.path.exists(events):
        os.remove(events)
    bus = Bus()
    bus.add(JsonlSink(events, {"call": path}))
    bus.start()
    summary = Pipeline(scorer=scorer, playbook=playbook, sink=bus.publish, engine=engine).run(
        FileSource(path, sample_rate=engine.sample_rate))
    bus.close()
    return int(summary.duration * 16000)


def write_call(path: Path, minutes: float, seed: int = 0) -> Path:
    """A stereo call of noise bursts (0.5-4 s turns, quiet gaps) written 10 s at a time."""
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(seed)
    block = 10 * RATE
    total = int(minutes * 60 * RATE)
    speaker, left = 0, 0
    with sf.SoundFile(str(path), "w", samplerate=RATE, channels=2, subtype="PCM_16") as f:
        for start in range(0, total, block):
            n = min(block, total - start)
            out = rng.standard_normal((n, 2)) * 0.003  # line noise on both sides
            i = 0
            while i < n:
                if left <= 0:
                    speaker, left = 1 - speaker, int(rng.uniform(0.5, 4.0) * RATE)
                k = min(left, n - i)
                env = np.abs(np.sin(np.linspace(0, np.pi * k / 1600, k)))  # syllable-ish bursts
                out[i:i + k, speaker] += 0.25 * env * rng.standard_normal(k)
                i += k
                left -= k
            f.write(out.clip(-1, 1))
    return path


def _peak_rss_mib() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / (1024 * 1024) if sys.platform == "darwin" else kb / 1024  # macOS reports bytes


def child(path: str, mode: str) -> dict:
    """Runs in the measured process: import, stream (or load) the whole call, report."""
    sys.path.insert(0, str(REPO))
    from coach.audio import load_call
    from coach.sources import FileSource

    if mode.startswith("pipeline"):
        import coach.classifier  # noqa: F401 - torch and transformers count as imports
        import coach.pipeline  # noqa: F401
    base = _peak_rss_mib()  # interpreter + imports, before any audio
    t0 = time.perf_counter()
    frames = 0
    if mode.startswith("pipeline"):
        frames = _run_pipeline(path, mode.partition(":")[2] or "turns")
    elif mode == "load_call":
        call = load_call(path)
        frames = len(call.agent)
        del call
    else:
        with FileSource(path) as src:
            for tup in src.chunks(0.1):
                frames += len(tup[0].samples)
    return {"mode": mode, "peak_rss_mib": _peak_rss_mib(), "imports_rss_mib": base,
            "seconds": time.perf_counter() - t0, "audio_s": frames / 16000}


def measure(path: Path, mode: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", str(path), "--mode", mode],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, nargs=2, default=[5.0, 60.0], metavar=("SHORT", "LONG"))
    ap.add_argument("--load-call", action="store_true", help="also measure the whole-call load_call path")
    ap.add_argument("--pipeline", action="store_true",
                    help="also measure the full replay (source, clock, classifier, playbook, events file)")
    ap.add_argument("--engine", default="turns",
                    help="recognizer for --pipeline: turns (a cheap stand-in, default) or pocketsphinx (slow)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="stream", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.mode)))
        return

    modes = ["stream"] + (["load_call"] if args.load_call else []) + (
        [f"pipeline:{args.engine}"] if args.pipeline else [])
    with tempfile.TemporaryDirectory(prefix="coach-bench-mem-") as tmp:
        results: dict[str, dict[float, dict]] = {m: {} for m in modes}
        for minutes in args.minutes:
            path = write_call(Path(tmp) / f"call_{minutes:g}min.wav", minutes)
            size = path.stat().st_size / 2 ** 20
            for mode in modes:
                r = measure(path, mode)
                results[mode][minutes] = r
                print(f"{mode:18s} {minutes:5g} min stereo {RATE} Hz ({size:6.1f} MiB on disk): "
                      f"peak RSS {r['peak_rss_mib']:7.1f} MiB (imports {r['imports_rss_mib']:.1f} MiB), "
                      f"{r['seconds']:.1f} s for {r['audio_s']:.0f} s of audio")
        short, long_ = args.minutes
        for mode in modes:
            ratio = results[mode][long_]["peak_rss_mib"] / results[mode][short]["peak_rss_mib"]
            note = "whole call in memory" if mode == "load_call" else f"target <= {TARGET_RATIO}"
            print(f"{mode:18s} ratio {long_:g}-min / {short:g}-min peak RSS: {ratio:.2f} ({note})")


if __name__ == "__main__":
    main()
