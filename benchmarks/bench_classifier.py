"""Latency and throughput of the shipped classifier against the bare encoder.

Single-utterance latency (batch 1, p50/p95) is what the live coach feels; the bare
encoder's forward pass on the same texts, measured in the same run, is the floor.
Target: classifier p95 within 1.5x of the encoder's p95.

A model that reads the previous turn (``context_tokens`` > 0) is also timed the way
the live coach runs it: each customer turn is classified after the turn before it (one
pass over both), on top of the plain embedding the paraphrase check needs. Its floor
is the bare encoder's forward pass on the same two-turn input.

    python benchmarks/bench_classifier.py [--model DIR] [--n 200] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

UTTERANCES = [
    "hi i'm calling about my bill",
    "this is the third time i've called and nobody has fixed it",
    "okay thank you",
    "you people are completely useless",
    "can you tell me when the technician is coming",
    "i want to cancel my account right now",
    "that's great thanks for your help",
    "i've been on hold for forty five minutes this is ridiculous",
    "if this isn't fixed today i'm going to lose it",
    "sure my account number is four five six seven",
]


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs) * 1000.0, q))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--n", type=int, default=200, help="single-utterance calls to time")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    a = ap.parse_args()

    from coach.classifier import load_classifier
    from coach.text import normalize_speech

    clf = load_classifier(a.model)  # the shipped model (found in the package) unless --model
    torch.set_num_threads(a.threads)  # after loading: the loader caps threads to its own default
    enc = clf.encoder
    texts = [UTTERANCES[i % len(UTTERANCES)] for i in range(a.n)]
    for t in texts[:20]:  # warm up both paths
        clf.classify([t])
        enc.embed([t])

    # Interleave the two measurements so both see the same machine load.
    t_clf, t_enc = [], []
    for t in texts:
        norm = normalize_speech(t)
        t0 = time.perf_counter()
        with torch.inference_mode():
            enc.forward(enc.tokenize([norm]))
        t_enc.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        clf.classify([t])
        t_clf.append(time.perf_counter() - t0)

    ctx_res = None
    if clf.uses_context:
        k = clf.config.context_tokens
        t_ctx, t_pair, t_turn = [], [], []
        for i, t in enumerate(texts):
            prev = UTTERANCES[(i - 1) % len(UTTERANCES)]
            pair = enc.tokenize([normalize_speech(t)], [normalize_speech(prev)], k)
            t0 = time.perf_counter()
            with torch.inference_mode():
                enc.forward(pair)
            t_pair.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            clf.classify([t], contexts=[prev])
            t_ctx.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            clf.embed([t])                      # what the live scorer adds: the plain embedding
            t_turn.append(t_ctx[-1] + time.perf_counter() - t0)
        ctx_res = {"context_tokens": k,
                   "classifier_ms": {"p50": pct(t_ctx, 50), "p95": pct(t_ctx, 95)},
                   "encoder_forward_same_input_ms": {"p50": pct(t_pair, 50), "p95": pct(t_pair, 95)},
                   "customer_turn_ms": {"p50": pct(t_turn, 50), "p95": pct(t_turn, 95)}}
        ctx_res["p95_ratio"] = ctx_res["classifier_ms"]["p95"] / ctx_res["encoder_forward_same_input_ms"]["p95"]

    batch = [UTTERANCES[i % len(UTTERANCES)] for i in range(64 * 8)]
    t0 = time.perf_counter()
    clf.classify(batch, batch_size=64)
    thr = len(batch) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    enc.embed([normalize_speech(t) for t in batch], batch_size=64)
    thr_enc = len(batch) / (time.perf_counter() - t0)

    res = {
        "threads": torch.get_num_threads(),
        "classifier_ms": {"p50": pct(t_clf, 50), "p95": pct(t_clf, 95), "mean": 1000 * statistics.mean(t_clf)},
        "encoder_forward_ms": {"p50": pct(t_enc, 50), "p95": pct(t_enc, 95), "mean": 1000 * statistics.mean(t_enc)},
        "throughput_batch64_per_s": {"classifier": thr, "encoder": thr_enc},
    }
    res["p95_ratio"] = res["classifier_ms"]["p95"] / res["encoder_forward_ms"]["p95"]
    res["p95_target_met"] = res["p95_ratio"] <= 1.5
    if ctx_res:
        res["with_previous_turn"] = ctx_res
    if a.json:
        print(json.dumps(res, indent=2))
        return 0
    c, e = res["classifier_ms"], res["encoder_forward_ms"]
    print(f"threads {res['threads']}, {a.n} single-utterance calls")
    print(f"classifier   p50 {c['p50']:6.2f} ms  p95 {c['p95']:6.2f} ms")
    print(f"encoder fwd  p50 {e['p50']:6.2f} ms  p95 {e['p95']:6.2f} ms  (floor)")
    print(f"p95 ratio {res['p95_ratio']:.2f}x (target <= 1.5x: {'met' if res['p95_target_met'] else 'NOT met'})")
    print(f"throughput batch 64: classifier {thr:.0f}/s, encoder {thr_enc:.0f}/s")
    if ctx_res:
        c, e, u = ctx_res["classifier_ms"], ctx_res["encoder_forward_same_input_ms"], ctx_res["customer_turn_ms"]
        print(f"with the previous turn ({ctx_res['context_tokens']} tokens):")
        print(f"  classifier   p50 {c['p50']:6.2f} ms  p95 {c['p95']:6.2f} ms")
        print(f"  encoder fwd  p50 {e['p50']:6.2f} ms  p95 {e['p95']:6.2f} ms  (floor, same input)")
        print(f"  p95 ratio {ctx_res['p95_ratio']:.2f}x; a live customer turn (plain embedding + classify in "
              f"context) p95 {u['p95']:.2f} ms = {u['p95'] / res['encoder_forward_ms']['p95']:.2f}x the plain forward")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
