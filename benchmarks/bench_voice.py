"""Voice features: their cost per second of audio, the held-out arousal AUC and the pace error.

Cost: each side of the real contact-centre call (8 kHz, resampled to 16 kHz as the
pipeline does) streamed in 100 ms chunks through a :class:`coach.voice.VoiceTracker`:
``feed`` for every chunk, ``measure`` + gate (+ ``arousal``/``observe`` for the caller)
for each talk spurt; also one :func:`coach.voice.measure` over the whole channel.
Quality: the figures ``scripts/calibrate_arousal.py`` reports, for the SHIPPED
``coach/configs/voice.yaml``. Figures only, no asserts.

    python benchmarks/bench_voice.py [--repeat N]
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from coach import voice as V  # noqa: E402
from coach.audio import resample, to_int16  # noqa: E402
from coach.events import AudioChunk, Speaker  # noqa: E402


def _script():
    spec = importlib.util.spec_from_file_location("calibrate_arousal", REPO / "scripts" / "calibrate_arousal.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["calibrate_arousal"] = mod
    spec.loader.exec_module(mod)
    return mod


def stream(x16: np.ndarray, spans, speaker: Speaker, cal: V.Calibration) -> tuple[float, float, int]:
    """(seconds feeding, seconds measuring, utterances kept) for one channel."""
    tr = V.VoiceTracker(calibration=cal, speaker=speaker)
    step = 1600
    t_feed = t_meas = 0.0
    j = kept = 0
    for i in range(0, len(x16), step):
        chunk = AudioChunk(speaker, i / 16000, x16[i: i + step], 16000)
        t0 = time.perf_counter()
        tr.feed(chunk)
        t1 = time.perf_counter()
        t_feed += t1 - t0
        t = (i + step) / 16000
        while j < len(spans) and spans[j][1] + 0.1 <= t:
            a, b = spans[j]
            t0 = time.perf_counter()
            v = tr.measure(a - 0.1, b + 0.1)
            if tr.is_speech(v):
                kept += 1
                if speaker == Speaker.CUSTOMER:
                    v = dataclasses.replace(v, arousal=tr.arousal(v))
                tr.observe(v)
            t_meas += time.perf_counter() - t0
            j += 1
    return t_feed, t_meas, kept


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    C = _script()
    cal = V.default_calibration()

    print("cost (real call, 16 kHz, 100 ms chunks; median of", args.repeat, "runs)")
    for side, speaker in (("customer", Speaker.CUSTOMER), ("agent", Speaker.AGENT)):
        x, sr = C._mono(C.call_channels()[side])
        x16 = to_int16(resample(x, sr, 16000))
        dur = len(x16) / 16000
        spans = C.segments(x16)
        runs = [stream(x16, spans, speaker, cal) for _ in range(args.repeat)]
        feed = statistics.median(r[0] for r in runs)
        meas = statistics.median(r[1] for r in runs)
        speech = sum(b - a for a, b in spans)
        whole = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            V.measure(x16, 16000)
            whole.append(time.perf_counter() - t0)
        print(f"  {side}: {dur:.0f} s audio, {len(spans)} talk spurts ({speech:.0f} s), kept {runs[0][2]}")
        print(f"    feed      {feed / dur * 1e3:7.2f} ms per s of audio ({feed * 1e3:.0f} ms)")
        print(f"    measure   {meas / dur * 1e3:7.2f} ms per s of audio, {meas / max(speech, 1e-9) * 1e3:.2f} ms per s "
              f"of spurt ({meas * 1e3 / max(1, len(spans)):.1f} ms per utterance)")
        print(f"    total     {(feed + meas) / dur * 1e3:7.2f} ms per s of audio = {(feed + meas) / dur * 100:.2f} % of one core")
        print(f"    measure() over the whole channel: {statistics.median(whole) / dur * 1e3:.2f} ms per s of audio")
        print(f"    tracker memory: {V.VoiceOptions().buffer_s:.0f} s ring = {int(V.VoiceOptions().buffer_s * 16000) * 2 // 1024} KiB "
              f"+ {int(V.VoiceOptions().floor_window_s * 100) * 8 // 1024} KiB floor ring, whatever the call length")

    t0 = time.perf_counter()
    h = C.heldout_auc(calibration=cal)
    t_auc = time.perf_counter() - t0
    print(f"arousal, held-out words (shipped calibration): AUC {h['auc']:.3f} "
          f"(angry {h['n_angry']} vs neutral {h['n_neutral']}, same speaker), "
          f"cold start {h['auc_cold_start']:.3f}, per speaker "
          + ", ".join(f"{k} {v:.3f}" for k, v in h["per_speaker"].items())
          + "; per feature " + ", ".join(f"{k} {v:.3f}" for k, v in h["per_feature_auc"].items())
          + f"  [{t_auc:.1f} s incl. loading]")
    for sp, d in C.feature_differences().items():
        print(f"  angry - neutral {sp}: {d['loudness_db']:+.1f} dB, {d['pitch_hz']:+.0f} Hz, range "
              f"x{d['pitch_range_ratio']:.1f} ({d['pitch_range_st']:+.1f} st), rate {d['rate_sps']:+.2f}/s")

    pace = C.pace_report()
    for k, d in pace["cross"].items():
        print(f"pace {k}: syllables_per_word {d['spw']:.3f}, mean abs error {d['mare'] * 100:.1f} %, "
              f"max {d['max'] * 100:.1f} %")
    errs = C.pace_errors(C.read_speech_items(), cal.syllables_per_word)
    print(f"pace, shipped syllables_per_word {cal.syllables_per_word:.3f}: mean abs error "
          f"{np.mean(np.abs(errs)) * 100:.1f} %, max {np.max(np.abs(errs)) * 100:.1f} %, "
          f"within 15 %: {int(np.sum(np.abs(errs) <= 0.15))}/{len(errs)} files")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
