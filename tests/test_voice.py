"""coach.voice: pitch, loudness, gate, arousal and pace on synthetic and real audio."""
from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest

from coach import voice as V
from coach.audio import resample, to_int16
from coach.errors import ConfigError
from coach.events import AudioChunk, Speaker

from conftest import REPO

# ----------------------------------------------------------------------------- helpers


def _script():
    """scripts/calibrate_arousal.py as a module (it holds the corpus evaluation)."""
    name = "calibrate_arousal"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / "calibrate_arousal.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def calib(shared_data):
    mod = _script()
    for path in (mod.EMOTIONAL / "manifest.csv", mod.READ_SPEECH, mod.CONTACT_CENTER):
        if not path.exists():
            pytest.skip(f"{path} is missing: check out the shared test data beside this repository (../shared/data)")
    return mod


def _level(x: np.ndarray, db: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x)) * 10 ** (db / 20.0)


def harmonic(rate: int, f0: float | np.ndarray, seconds: float) -> np.ndarray:
    """A glottal-like harmonic series (1/k amplitudes) up to 3.8 kHz, F0 fixed or a contour."""
    n = int(seconds * rate)
    f = np.broadcast_to(np.asarray(f0, dtype=np.float64), (n,))
    phase = 2 * np.pi * np.cumsum(f) / rate
    top = int(3800 // float(np.max(f)))
    return sum(np.sin(k * phase) / k for k in range(1, max(2, top) + 1))


def voice_like(rate: int = 16000, f0: float = 150.0, level_db: float = -26.0, swing_st: float = 1.0,
               syllables_per_s: float = 4.0, seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    """Synthetic talk: a harmonic voice whose F0 swings +-swing_st around f0, chopped into
    syllables, with 0.4 s of faint noise either side (so the stretch has a floor)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    contour = f0 * 2 ** (swing_st / 12.0 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, np.pi)))
    env = np.clip(np.sin(np.pi * syllables_per_s * t), 0, None) ** 0.6
    x = _level(harmonic(rate, contour, seconds) * env, level_db)
    pad = np.zeros(int(0.4 * rate))
    y = np.concatenate([pad, x, pad])
    return to_int16(y + _level(rng.standard_normal(len(y)), -70.0))


def line_noise(rate: int, seconds: float, level_db: float, seed: int = 1) -> np.ndarray:
    """Hiss plus 50 Hz mains hum (with harmonics), the hum 6 dB under the hiss."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    hiss = _level(rng.standard_normal(n), level_db)
    hum = _level(sum(np.sin(2 * np.pi * 50 * k * t) / k for k in range(1, 12)), level_db - 6.0)
    return hiss + hum


def feed_all(tr: V.VoiceTracker, x: np.ndarray, rate: int, chunk_s: float = 0.1, t0: float = 0.0) -> None:
    step = int(chunk_s * rate)
    for i in range(0, len(x), step):
        tr.feed(AudioChunk(Speaker.CUSTOMER, t0 + i / rate, x[i: i + step], rate))


# ----------------------------------------------------------------------------- pitch and loudness


@pytest.mark.parametrize("rate", [8000, 16000])
@pytest.mark.parametrize("f0", [90.0, 150.0, 220.0, 320.0])
def test_pitch_of_a_harmonic_tone(rate, f0):
    x = to_int16(np.concatenate([np.zeros(rate // 4), _level(harmonic(rate, f0, 1.0), -20.0), np.zeros(rate // 4)]))
    v = V.measure(x, rate)
    assert v is not None and v.pitch_hz is not None
    assert abs(v.pitch_hz / f0 - 1.0) < 0.03, v
    assert v.pitch_range_st < 0.3
    assert abs(v.speech_s - 1.0) < 0.1


def test_phone_audio_at_8_and_16_khz_reads_alike():
    """The pipeline feeds 16 kHz made from 8 kHz phone audio: same figures as the 8 kHz original."""
    x8 = voice_like(rate=8000, f0=180.0, swing_st=2.0)
    x16 = to_int16(resample(x8.astype(np.float64) / 32768.0, 8000, 16000))
    a, b = V.measure(x8, 8000), V.measure(x16, 16000)
    assert abs(a.loudness_db - b.loudness_db) < 0.5
    assert abs(a.pitch_hz / b.pitch_hz - 1.0) < 0.01
    assert abs(a.pitch_range_st - b.pitch_range_st) < 0.3
    assert abs(a.speech_s - b.speech_s) < 0.05


def test_loudness_tracks_level():
    quiet = V.measure(voice_like(level_db=-30.0), 16000)
    loud = V.measure(voice_like(level_db=-20.0), 16000)
    assert 9.0 < loud.loudness_db - quiet.loudness_db < 11.0


def test_nothing_to_measure():
    assert V.measure(np.zeros(16000, np.int16), 16000) is None
    assert V.measure(np.zeros(10, np.int16), 16000) is None


# ----------------------------------------------------------------------------- arousal


def _baseline_tracker(cal: V.Calibration | None = None) -> V.VoiceTracker:
    tr = V.VoiceTracker(calibration=cal, speaker=Speaker.CUSTOMER)
    for seed in range(12):  # a calm caller's talk: small natural variation
        v = V.measure(voice_like(f0=150.0 * 2 ** ((seed % 3 - 1) / 24), level_db=-26.0 + (seed % 3 - 1),
                                 swing_st=1.0, seed=seed), 16000)
        assert tr.observe(v), v
    return tr


def test_louder_higher_wider_reads_more_aroused():
    tr = _baseline_tracker()
    base = V.measure(voice_like(seed=99), 16000)
    a0 = tr.arousal(base)
    variants = {
        "louder": dict(level_db=-18.0),
        "higher": dict(f0=190.0),
        "wider": dict(swing_st=3.5),
        "all": dict(level_db=-18.0, f0=190.0, swing_st=3.5),
    }
    got = {k: tr.arousal(V.measure(voice_like(seed=99, **kw), 16000)) for k, kw in variants.items()}
    assert a0 < 0.3, a0
    for k in ("louder", "higher", "wider"):
        assert got[k] > a0 + 0.05, (k, a0, got)
    assert got["all"] > max(got["louder"], got["higher"], got["wider"])
    assert got["all"] > 0.8


def test_angry_from_the_first_word_reads_aroused():
    """No baseline yet: population norms alone must still separate a shout from calm talk."""
    tr = V.VoiceTracker(speaker=Speaker.CUSTOMER)
    calm = tr.arousal(V.measure(voice_like(level_db=-26.0, f0=150.0), 16000))
    shout = tr.arousal(V.measure(voice_like(level_db=-14.0, f0=240.0, swing_st=4.0), 16000))
    assert calm < 0.3 < 0.7 < shout, (calm, shout)


def test_own_weight_grows_with_baseline_speech():
    cal = V.default_calibration()
    ws = [V.own_weight(s, cal) for s in (0.0, 5.0, 20.0, 120.0)]
    assert ws[0] == 0.0 and ws == sorted(ws) and ws[-1] <= cal.max_own_weight


def test_arousal_ignores_the_utterance_itself():
    tr = _baseline_tracker()
    v = V.measure(voice_like(level_db=-16.0, f0=200.0, swing_st=3.0, seed=5), 16000)
    before = tr.arousal(v)
    assert tr.observe(v)
    assert tr.arousal(v) == pytest.approx(before, abs=0.02)  # itself excluded; the window moved by one


def test_agent_tracker_refuses_arousal_and_keeps_only_levels():
    tr = V.VoiceTracker(speaker=Speaker.AGENT)
    v = V.measure(voice_like(), 16000)
    with pytest.raises(ValueError, match="never computed for the agent"):
        tr.arousal(v)
    assert tr.observe(v)
    assert len(tr.baseline()[0]) == 0
    assert tr.words_per_minute(v) == pytest.approx(v.rate_sps * 60 / tr.calibration.syllables_per_word)


# ----------------------------------------------------------------------------- the gate, floor and baseline


def test_line_noise_is_not_speech_and_sets_the_floor():
    rate = 16000
    noise = line_noise(rate, 12.0, -50.0)
    tr = V.VoiceTracker(speaker=Speaker.CUSTOMER)
    feed_all(tr, to_int16(noise), rate)
    ref = V.analyse(to_int16(noise), rate)          # band level of the noise itself
    level = float(np.median(ref.energy_db))
    assert abs(tr.noise_floor_db() - level) < 3.0, (tr.noise_floor_db(), level)
    for a in (0.0, 3.0, 6.5):
        v = tr.measure(a, a + 3.0)
        assert not tr.is_speech(v), v
    assert not V.is_speech(V.measure(to_int16(noise[: 3 * rate]), rate), tr.calibration.gate)


def test_noise_bursts_are_rejected_and_ignored_by_floor_and_baseline():
    rate = 16000
    rng = np.random.default_rng(3)
    x = line_noise(rate, 30.0, -68.0)
    bursts = []
    for k in range(8):                               # 0.6 s of -55 dBFS noise every 3.5 s
        a = int((1.0 + 3.5 * k) * rate)
        x[a: a + int(0.6 * rate)] += _level(rng.standard_normal(int(0.6 * rate)), -55.0)
        bursts.append((a / rate, a / rate + 0.6))
    speech = voice_like(rate, level_db=-22.0).astype(np.float64) / 32768.0
    s0 = int(26.0 * rate)
    x[s0: s0 + len(speech)] += speech
    tr = _baseline_tracker()
    n_base = len(tr.baseline()[0])
    probe = V.measure(voice_like(level_db=-18.0, f0=180.0, seed=7), 16000)
    before = tr.arousal(probe)
    feed_all(tr, to_int16(x), rate)
    floor = tr.noise_floor_db()
    quiet = V.analyse(to_int16(line_noise(rate, 5.0, -68.0)), rate)
    assert abs(floor - float(np.median(quiet.energy_db))) < 3.0, floor   # the bursts did not lift it
    for a, b in bursts[-5:]:                          # those still in the 30 s buffer
        v = tr.measure(a - 0.1, b + 0.1)
        assert not tr.is_speech(v), v
        assert not tr.observe(v)
    assert len(tr.baseline()[0]) == n_base
    assert tr.arousal(probe) == before
    v = tr.measure(26.0, 26.0 + len(speech) / rate)
    assert tr.is_speech(v), v                         # the gate still lets speech through


def test_speech_from_the_first_chunk_is_kept():
    """Call start: no line noise yet to learn a floor from, the caller talks at once."""
    rate = 16000
    x = voice_like(rate, level_db=-22.0, seconds=3.0)[int(0.4 * rate):]    # no quiet lead-in
    tr = V.VoiceTracker(speaker=Speaker.CUSTOMER)
    feed_all(tr, x[: int(1.2 * rate)], rate)
    v = tr.measure(0.0, 1.2)
    assert tr.is_speech(v), (v, tr.noise_floor_db())
    assert 0.0 <= tr.arousal(v) <= 1.0 and tr.observe(v)


def test_a_steady_tone_is_not_speech():
    rate = 8000
    x = to_int16(np.concatenate([_level(line_noise(rate, 1.0, -65.0), -65.0),
                                 _level(np.sin(2 * np.pi * 425 * np.arange(2 * rate) / rate), -30.0),
                                 _level(line_noise(rate, 1.0, -65.0, seed=2), -65.0)]))
    v = V.measure(x, rate)
    assert v is not None and v.pitch_hz == pytest.approx(425, rel=0.02)
    assert not V.is_speech(v, V.default_calibration().gate)


def test_leak_from_the_other_side_is_dropped_once_the_speaker_is_known():
    tr = V.VoiceTracker(speaker=Speaker.CUSTOMER)
    leak = V.measure(voice_like(level_db=-43.0, f0=260.0, swing_st=2.0), 16000)
    assert leak.loudness_db > tr.calibration.gate.min_loudness_db
    assert tr.is_speech(leak)                         # alone it looks like quiet speech...
    for seed in range(3):
        assert tr.observe(V.measure(voice_like(level_db=-20.0, seed=seed), 16000))
    own = float(np.median(list(tr._levels)))
    assert leak.loudness_db < own - tr.calibration.gate.max_below_own_db
    assert not tr.is_speech(leak)                     # ...but it is far under this caller
    assert not tr.observe(leak)


def test_real_call_gate(calib):
    """The real contact-centre call through the tracker: noise bursts and leaks dropped, talk kept."""
    cal = V.default_calibration()
    for side in ("customer", "agent"):
        out = calib.call_voices(side, cal)
        kept = [v for _, _, v, k in out if k]
        assert len(kept) >= 0.5 * len(out) or side == "customer"
        assert all(v.loudness_db > -40.0 for v in kept[3:]), [v.loudness_db for v in kept]
        assert not any(k for _, _, v, k in out if v is not None and v.loudness_db < -50.0)
        if side == "customer":
            assert len(kept) >= 20
            assert sum(1 for _, _, v, k in out if not k and v is not None and v.loudness_db < -50) >= 15
            assert all(0.0 <= v.arousal <= 1.0 for v in kept)


# ----------------------------------------------------------------------------- the tracker's buffer


def test_span_matches_the_audio_across_the_ring_wrap():
    rate = 8000
    tr = V.VoiceTracker(V.VoiceOptions(buffer_s=5.0), speaker=Speaker.CUSTOMER)
    x = (np.arange(int(12.3 * rate)) % 30000).astype(np.int16)
    feed_all(tr, x, rate, chunk_s=0.13, t0=100.0)
    got = tr.span(100.0 + 9.0, 100.0 + 11.5)
    assert np.array_equal(got, x[9 * rate: int(11.5 * rate)])
    assert len(tr.span(100.0, 101.0)) == 0            # long gone
    assert tr.measure(100.0, 101.0) is None


def test_tracker_measure_equals_pure_measure():
    rate = 16000
    x = np.concatenate([to_int16(line_noise(rate, 3.0, -62.0)), voice_like(rate, level_db=-22.0),
                        to_int16(line_noise(rate, 1.0, -62.0, seed=4))])
    tr = V.VoiceTracker(speaker=Speaker.CUSTOMER)
    feed_all(tr, x, rate)
    a, b = 3.0, 3.0 + 2.8
    assert tr.measure(a, b) == V.measure(x[int(a * rate): int(b * rate)], rate, tr.noise_floor_db())


def test_gap_in_the_chunks_keeps_time_aligned():
    rate = 8000
    tr = V.VoiceTracker(speaker=Speaker.CUSTOMER)
    x = (np.arange(4 * rate) % 1000 + 1).astype(np.int16)
    tr.feed(AudioChunk(Speaker.CUSTOMER, 0.0, x[: 2 * rate], rate))
    tr.feed(AudioChunk(Speaker.CUSTOMER, 3.0, x[2 * rate:], rate))   # 1 s dropped
    assert np.all(tr.span(2.0, 3.0) == 0)
    assert np.array_equal(tr.span(3.0, 5.0), x[2 * rate:])


def test_memory_is_bounded_over_a_30_minute_call():
    rate = 16000
    tr = V.VoiceTracker(speaker=Speaker.CUSTOMER)
    chunk = to_int16(line_noise(rate, 0.1, -60.0))
    sizes = []
    for i in range(30 * 60 * 10):
        tr.feed(AudioChunk(Speaker.CUSTOMER, i * 0.1, chunk, rate))
        if i in (600, 30 * 60 * 10 - 1):
            sizes.append((tr.buffer_samples, tr._buf.nbytes, tr._pow.nbytes, len(tr._carry)))
    assert sizes[0] == sizes[1]
    assert sizes[0][0] == int(tr.options.buffer_s * rate)
    t_end = 30 * 60.0
    assert len(tr.span(t_end - 2.0, t_end)) == 2 * rate
    v = V.measure(voice_like(), 16000)
    for _ in range(500):
        tr.observe(v)
    assert len(tr._baseline) == tr.options.baseline_utterances


def test_options_are_checked():
    with pytest.raises(ValueError):
        V.VoiceOptions(buffer_s=0.0)
    with pytest.raises(ValueError):
        V.VoiceOptions(floor_percentile=60.0)


# ----------------------------------------------------------------------------- calibration file


def test_shipped_calibration_loads():
    cal = V.load_calibration()
    assert set(cal.weights) == set(V.FEATURES)
    assert cal.weights["loudness"] > 0 and cal.weights["pitch"] > 0 and cal.weights["range"] > 0
    assert 0.5 < cal.syllables_per_word < 2.0
    assert 1 / (1 + np.exp(-cal.intercept)) < 0.2     # an utterance at the caller's baseline reads calm


def test_broken_calibration_is_one_config_error(tmp_path):
    p = tmp_path / "voice.yaml"
    text = V.load_calibration().source
    good = open(text, encoding="utf-8").read()
    p.write_text(good.replace("pace:\n", "nopace:\n"), encoding="utf-8")
    with pytest.raises(ConfigError, match="pace"):
        V.load_calibration(p)
    p.write_text(good.replace("max_weight: 0.85", "max_weight: 3"), encoding="utf-8")
    with pytest.raises(ConfigError, match="max_weight"):
        V.load_calibration(p)


def test_words_per_minute():
    assert V.words_per_minute(4.0, 1.25) == pytest.approx(192.0)
    assert V.words_per_minute(4.0) == pytest.approx(240.0 / V.default_calibration().syllables_per_word)


# ----------------------------------------------------------------------------- real data


def test_heldout_emotional_speech_auc(calib):
    """Angry vs neutral, same speaker, held-out words, baselines from tuning words only,
    scored with the SHIPPED calibration (the figure the calibration script reports)."""
    res = calib.heldout_auc(calibration=V.default_calibration())
    assert res["n_angry"] >= 20 and res["n_neutral"] >= 20
    assert res["auc"] >= 0.85, res
    assert res["auc_cold_start"] >= 0.85, res
    assert all(a >= 0.85 for a in res["per_speaker"].values()), res


def test_angry_differs_from_neutral_as_measured(calib):
    for sp, d in calib.feature_differences().items():
        assert d["loudness_db"] > 5.0, (sp, d)
        assert d["pitch_hz"] > 30.0, (sp, d)
        assert d["pitch_range_ratio"] > 2.0, (sp, d)


def test_pace_on_the_other_read_speech_folder(calib):
    """syllables_per_word fitted on one folder, wpm checked on the other (both ways).

    Per file the error is bounded by how far a file's own syllables per word stray from
    the folder's (1.0-1.6 in these files): "seven of clubs" has 4 syllables in 3 words.
    """
    rep = calib.pace_report()
    assert set(rep["cross"]) == {"cards->librivox", "librivox->cards"}
    for k, d in rep["cross"].items():
        assert d["mare"] <= 0.15, (k, d)
        assert d["max"] <= 0.40, (k, d)
    assert rep["pooled"]["mare"] <= 0.15
    shipped = V.default_calibration().syllables_per_word
    errs = calib.pace_errors(calib.read_speech_items(), shipped)
    assert float(np.mean(np.abs(errs))) <= 0.15
