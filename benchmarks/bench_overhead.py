"""The coach's own overhead on top of the bare speech recognizer, measured in one run.

Baseline: the same engine's recognizers (one per channel, one thread each, as the
pipeline runs them) fed the same 100 ms chunks, read from the same source, with nothing
else attached. Coach: the full replay, ``Pipeline.run(source)`` (source + recognizers +
merge + batched classifier + trajectory + playbook). Both read and resample the file,
so the difference is the coach's own work. Prints both times, the ratio and
per-utterance classification latency. Target: overhead at most 10% of the bare
recognizer's time.

    python benchmarks/bench_overhead.py [CALL.wav [CUSTOMER.wav]] [--repeat N]

The default call is the demo call shipped in the package (coach/examples/escalating.wav).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from coach import resources  # noqa: E402
from coach.classifier import load_classifier  # noqa: E402
from coach.pipeline import CHUNK_S, Pipeline, Scorer  # noqa: E402
from coach.playbook import load_playbook  # noqa: E402
from coach.sources import open_source  # noqa: E402
from coach.stt import SttOptions, open_engine  # noqa: E402


def bare(engine, source) -> tuple[float, list]:
    """Both channels through bare recognizers, in parallel threads; returns (seconds, utterances).

    The source is read and resampled inside the timed span, as the pipeline does.
    """
    results: list = []
    lock = threading.Lock()

    def run(chunks):
        rec = engine.recognizer(chunks[0].speaker)
        out = []
        for chunk in chunks:
            out += rec.accept(chunk)
        out += rec.finish()
        with lock:
            results.extend(out)

    t0 = time.perf_counter()
    groups = list(source.chunks(CHUNK_S))
    chans = [[g[k] for g in groups] for k in range(len(source.speakers))]
    threads = [threading.Thread(target=run, args=(c,)) for c in chans if c]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return time.perf_counter() - t0, results


def coached(engine, source, scorer, playbook) -> tuple[float, int]:
    n = [0]
    pipe = Pipeline(scorer=scorer, playbook=playbook, sink=lambda ev: n.__setitem__(0, n[0] + 1), engine=engine)
    t0 = time.perf_counter()
    pipe.run(source)
    return time.perf_counter() - t0, n[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("call", nargs="?", default=str(resources.packaged(resources.DEMO_CALL)))
    ap.add_argument("customer", nargs="?")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--engine", default="auto")
    ap.add_argument("--partials", action="store_true", help="also compute partial results (as live mode does)")
    args = ap.parse_args()

    engine = open_engine(SttOptions(engine=args.engine, partials=args.partials))
    source = open_source(args.call, args.customer, sample_rate=engine.sample_rate)
    if source.kind != "audio":
        ap.error(f"{args.call} is a transcript; the benchmark needs audio")
    duration = source.duration or 0.0
    source.close()
    playbook = load_playbook()
    clf = load_classifier()
    scorer = Scorer(clf, playbook.min_word_conf)
    print(f"engine: {engine.name}; call: {source.description}")

    bare_times, coach_times = [], []
    utts: list = []
    for _ in range(args.repeat):  # interleaved, so drift hits both alike
        t, utts = bare(engine, source)  # a file source reopens on each pass
        bare_times.append(t)
        t, _ = coached(engine, source, scorer, playbook)
        coach_times.append(t)
    b, c = min(bare_times), min(coach_times)
    print(f"bare recognizer:  {b:7.2f} s  ({duration / b:5.1f}x real time)")
    print(f"coach replay:     {c:7.2f} s  ({duration / c:5.1f}x real time)")
    print(f"ratio coach/bare: {c / b:7.3f}  (overhead {100 * (c / b - 1):+.1f}%, target <= +10%)")

    from coach.events import Utterance
    final = [u for u in utts if isinstance(u, Utterance)]
    lat = []
    for u in final:
        t0 = time.perf_counter()
        scorer.score([u])
        lat.append((time.perf_counter() - t0) * 1000)
    if lat:
        lat.sort()
        p95 = lat[min(len(lat) - 1, int(round(0.95 * (len(lat) - 1))))]
        print(f"per-utterance scoring latency over {len(lat)} utterances: p50 {statistics.median(lat):.1f} ms, p95 {p95:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
