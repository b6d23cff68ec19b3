"""PocketSphinx fallback engine on the shared read_speech corpus (real decoder, no mocks).

Measured on this corpus (5 librivox sentences + 5 card names, 92 words), streamed in
0.1 s chunks: WER 25.0 % at 16 kHz; through 8 kHz and back (phone audio) 31.5 % on
the whole corpus (the librivox half alone is worse). Word confidence is the lattice
posterior (mean 0.68 at 16 kHz) mapped through the calibrated tables of
coach/configs/confidence.yaml: mean 0.63 at 16 kHz (lowest 0.26, the wide table's
floor); on the narrowband librivox half the narrow table gives utterances 0.41 on average.
"""
from __future__ import annotations

import numpy as np
import pytest

from coach.audio import load_call, resample, to_int16
from coach.events import AudioChunk, Partial, Speaker
from coach.stt import PocketSphinxEngine, SttOptions, open_engine, wer
from stt_helpers import feed, read_speech_corpus, utterances

WER_MAX_16K = 0.32  # measured 0.25
WER_MAX_8K = 0.50  # measured 0.315 on the whole corpus; this test uses the harder librivox half


@pytest.fixture(scope="module")
def engine() -> PocketSphinxEngine:
    eng = open_engine(SttOptions(engine="pocketsphinx"))
    assert isinstance(eng, PocketSphinxEngine)
    return eng


@pytest.fixture(scope="module")
def corpus():
    return [(wav, ref, load_call(wav).customer) for wav, ref in read_speech_corpus()]


@pytest.fixture(scope="module")
def decoded(engine, corpus):
    """Each file streamed through one recognizer (reused, as for consecutive calls)."""
    rec = engine.recognizer(Speaker.CUSTOMER)
    return [(ref, audio, feed(rec, audio, t0=30.0 + k)) for k, (_wav, ref, audio) in enumerate(corpus)]


def test_wer():
    assert wer("a b c d", "a x c") == (2, 4)
    assert wer("", "a") == (1, 0)
    assert wer(["hello", "there"], ["hello", "there"]) == (0, 2)


def test_corpus_wer_16k(decoded):
    errors = words = 0
    for ref, _audio, events in decoded:
        e, n = wer(ref, " ".join(u.text for u in utterances(events)))
        errors, words = errors + e, words + n
    assert words > 80
    assert errors / words < WER_MAX_16K, f"WER {errors / words:.3f}"


def test_utterances_have_call_times_and_real_confidences(decoded):
    confs = []
    for k, (_ref, audio, events) in enumerate(decoded):
        t0 = 30.0 + k
        utts = utterances(events)
        assert utts
        for u in utts:
            assert t0 <= u.start < u.end <= t0 + len(audio) / 16000 + 0.05
            assert all(not w.word.startswith(("<", "[")) and "(" not in w.word for w in u.words)
            starts = [w.start for w in u.words]
            assert starts == sorted(starts) and all(w.start < w.end for w in u.words)
            assert all(0.0 <= w.conf <= 1.0 for w in u.words)
            assert u.loudness_db is not None
            confs += [w.conf for w in u.words]
    # posteriors really computed: not all 1.0, spread out
    assert 0.4 < float(np.mean(confs)) < 0.95 and min(confs) < 0.3


def test_partials_come_before_their_utterance(decoded):
    for _ref, _audio, events in decoded:
        kinds = [type(e).__name__ for e in events]
        if "Partial" in kinds:
            assert kinds.index("Partial") < kinds.index("Utterance")
        parts = [e for e in events if isinstance(e, Partial)]
        assert all(a.text != b.text for a, b in zip(parts, parts[1:]))
    assert sum(isinstance(e, Partial) for _r, _a, ev in decoded for e in ev) >= 10


def test_narrowband_audio_gets_low_confidence(engine, decoded, corpus):
    rec = engine.recognizer(Speaker.CUSTOMER)
    errors = words = 0
    wide = [u.confidence for _r, _a, ev in decoded for u in utterances(ev)]
    narrow = []
    for _wav, ref, audio in corpus[5:]:  # the five librivox sentences keep this quick
        phone = to_int16(resample(resample(audio / 32768.0, 16000, 8000), 8000, 16000))
        utts = utterances(feed(rec, phone))
        narrow += [u.confidence for u in utts]
        e, n = wer(ref, " ".join(u.text for u in utts))
        errors, words = errors + e, words + n
    assert errors / words < WER_MAX_8K
    assert np.mean(narrow) < 0.45 < np.mean(wide)


def test_segments_split_on_pauses_and_reset(engine, corpus):
    a, b = corpus[0][2], corpus[2][2]  # "ten of clubs", "seven of clubs"
    audio = np.concatenate([a, np.zeros(16000, np.int16), b])
    rec = engine.recognizer(Speaker.AGENT)
    utts = utterances(feed(rec, audio, speaker=Speaker.AGENT))
    assert len(utts) == 2 and utts[0].end < utts[1].start
    assert utts[1].start > len(a) / 16000  # second segment timed after the pause
    assert all(u.speaker == Speaker.AGENT for u in utts)
    rec.accept(AudioChunk(Speaker.AGENT, 0.0, a[:8000], 16000))
    rec.reset()
    assert feed(rec, np.zeros(16000, np.int16)) == []


def test_call_cut_off_mid_speech_on_a_frame_boundary_still_finishes(engine, corpus):
    """A call that ends while someone talks, after a whole number of endpointer frames
    (a 60 s excerpt of an 8 kHz call is one), still yields that speech as an utterance."""
    from pocketsphinx import Endpointer

    frame = Endpointer(sample_rate=16000).frame_bytes // 2  # samples per 30 ms endpointer frame
    audio = corpus[5][2]  # a librivox sentence, cut two thirds of the way through
    cut = audio[:len(audio) * 2 // 3 // frame * frame]
    assert len(cut) % frame == 0
    utts = utterances(feed(engine.recognizer(Speaker.CUSTOMER), cut))
    assert utts and utts[-1].end <= len(cut) / 16000 + 0.05
    assert utts[-1].end > len(cut) / 16000 - 1.0  # the speech running at the cut is kept


def test_description_and_rate(engine):
    assert engine.name == "pocketsphinx" and engine.sample_rate == 16000
    assert "coach models download vosk-model-small-en-us-0.15" in engine.description
