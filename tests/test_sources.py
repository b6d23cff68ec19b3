"""coach.sources / streaming coach.audio: equality with whole-file loading, chunk timing,
input limits with one precise error each, flat memory, the transcript source."""
from __future__ import annotations

import json
import os
import time
import tracemalloc
import wave
from pathlib import Path

import numpy as np
import pytest

from privileges import as_unprivileged
import soundfile as sf

from coach.audio import (AudioLimits, StreamResampler, load_call, open_call, probe, resample, to_int16,
                         write_wav)
from coach.errors import AudioError, TranscriptError
from coach.events import Speaker
from coach.sources import (AudioSource, FileSource, TranscriptSource, TwoFileSource, UtteranceSource,
                           open_source)


def noise(rate: int, seconds: float, seed: int, amp: float = 0.3) -> np.ndarray:
    """Band-limited-ish speech-like noise: random samples under a slow on/off envelope."""
    rng = np.random.default_rng(seed)
    n = int(rate * seconds)
    env = (np.sin(2 * np.pi * 0.7 * np.arange(n) / rate) > -0.2).astype(np.float64)
    return amp * rng.standard_normal(n).clip(-3, 3) / 3 * env


def streamed(src) -> dict[Speaker, np.ndarray]:
    """Concatenate every chunk of a source per speaker."""
    parts: dict[Speaker, list[np.ndarray]] = {}
    for tup in src.chunks():
        for ch in tup:
            parts.setdefault(ch.speaker, []).append(ch.samples)
    return {s: np.concatenate(p) for s, p in parts.items()}


def within_1_lsb(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == np.int16 and len(a) == len(b)
    assert np.abs(a.astype(np.int32) - b.astype(np.int32)).max(initial=0) <= 1


def whole(path: Path, rate: int = 16000) -> np.ndarray:
    """Reference: the whole file read at once and resampled at once."""
    data, sr = sf.read(str(path), dtype="float64", always_2d=True)
    return resample(data, sr, rate)


# ------------------------------------------------------------------ resampler


@pytest.mark.parametrize("from_rate", [8000, 44100, 48000, 16000])
@pytest.mark.parametrize("stereo", [False, True])
def test_stream_resampler_matches_whole_signal(from_rate, stereo):
    rng = np.random.default_rng(from_rate)
    shape = (int(from_rate * 1.37), 2) if stereo else (int(from_rate * 1.37),)
    x = rng.uniform(-0.95, 0.95, shape)
    ref = to_int16(resample(x, from_rate, 16000))
    rs = StreamResampler(from_rate, 16000)
    out, i = [], 0
    for size in rng.integers(1, from_rate // 3, 1000):  # irregular blocks, some tiny
        if i >= len(x):
            break
        out.append(rs.process(x[i:i + size]))
        i += size
    out.append(rs.flush())
    y = to_int16(np.concatenate(out, axis=0))
    assert y.shape == ref.shape
    assert np.abs(y.astype(np.int32) - ref.astype(np.int32)).max() <= 1


def test_stream_resampler_keeps_little_context():
    rs = StreamResampler(44100, 16000)
    for _ in range(50):
        rs.process(np.zeros(44100))
    assert rs._buf is not None and len(rs._buf) < 2000  # context only, not the signal so far


# ------------------------------------------------------------------ streaming == whole file


def test_stereo_8k_stream_equals_load_call_and_whole_file(tmp_path):
    p = write_wav(tmp_path / "st.wav", [noise(8000, 9.3, 1), noise(8000, 9.3, 2)], 8000)
    src = FileSource(p, agent_channel="right")
    got = streamed(src)
    call = load_call(p, agent_channel="right")
    ref = whole(p)
    assert src.speakers == (Speaker.AGENT, Speaker.CUSTOMER)
    within_1_lsb(got[Speaker.AGENT], to_int16(ref[:, 1]))
    within_1_lsb(got[Speaker.CUSTOMER], to_int16(ref[:, 0]))
    within_1_lsb(got[Speaker.AGENT], call.agent)
    within_1_lsb(got[Speaker.CUSTOMER], call.customer)
    assert src.duration == pytest.approx(9.3)
    assert src.description == "st.wav (9.3 s, 8000 Hz, stereo)"


def test_mono_44k_stream_equals_whole_file(tmp_path):
    p = write_wav(tmp_path / "m.wav", [noise(44100, 6.1, 3)], 44100)
    src = FileSource(p, mono_speaker="agent")
    got = streamed(src)
    assert src.speakers == (Speaker.AGENT,) and set(got) == {Speaker.AGENT}
    within_1_lsb(got[Speaker.AGENT], to_int16(whole(p)[:, 0]))
    within_1_lsb(got[Speaker.AGENT], load_call(p, mono_speaker="agent").agent)


def test_two_files_of_different_length_and_rate(tmp_path):
    a = write_wav(tmp_path / "agent.wav", [noise(8000, 3.2, 4)], 8000)
    c = write_wav(tmp_path / "cust.wav", [noise(44100, 7.9, 5), noise(44100, 7.9, 6)], 44100)
    src = TwoFileSource(a, c)
    got = streamed(src)
    n = int(7.9 * 16000)
    assert len(got[Speaker.AGENT]) == len(got[Speaker.CUSTOMER]) == n
    ref_a = to_int16(whole(a)[:, 0])
    within_1_lsb(got[Speaker.AGENT][:len(ref_a)], ref_a)
    assert not np.any(got[Speaker.AGENT][len(ref_a):])  # padded with silence
    within_1_lsb(got[Speaker.CUSTOMER], to_int16(whole(c).mean(axis=1)))
    call = load_call(a, c)
    within_1_lsb(got[Speaker.AGENT], call.agent)
    within_1_lsb(got[Speaker.CUSTOMER], call.customer)
    assert any("shorter" in w and "agent.wav" in w for w in src.warnings)
    assert "one file per speaker" in src.description


# ------------------------------------------------------------------ chunk contract


@pytest.mark.parametrize("chunk_s", [0.1, 0.25, 0.037])
def test_chunks_are_contiguous_with_one_chunk_per_speaker(tmp_path, chunk_s):
    a = write_wav(tmp_path / "a.wav", [noise(8000, 2.05, 7)], 8000)
    c = write_wav(tmp_path / "c.wav", [noise(22050, 4.33, 8)], 22050)
    src = TwoFileSource(a, c)
    t_next, total = 0.0, 0
    for tup in src.chunks(chunk_s):
        assert [ch.speaker for ch in tup] == [Speaker.AGENT, Speaker.CUSTOMER]
        assert len({ch.t for ch in tup}) == 1 and len({len(ch.samples) for ch in tup}) == 1
        assert tup[0].t == pytest.approx(t_next, abs=1e-9)
        assert all(ch.sample_rate == 16000 and ch.samples.dtype == np.int16 for ch in tup)
        t_next = tup[0].t + tup[0].duration
        total += len(tup[0].samples)
        step = round(chunk_s * 16000)
        assert len(tup[0].samples) <= step
    assert total == int(4.33 * 16000) and t_next == pytest.approx(src.duration)


def test_file_is_closed_on_exhaustion_and_by_close(tmp_path):
    p = write_wav(tmp_path / "x.wav", [noise(16000, 1.0, 9)], 16000)
    src = FileSource(p)
    list(src.chunks())
    assert src._call is None  # closed at the end of the stream
    with FileSource(p) as src2:
        it = src2.chunks()
        next(it)
        assert src2._call is not None
    assert src2._call is None
    src2.close()  # idempotent
    assert len(list(src2.chunks())) == 10  # reopens from the start


def test_sources_satisfy_the_protocols(tmp_path):
    p = write_wav(tmp_path / "x.wav", [noise(16000, 0.5, 9)], 16000)
    assert isinstance(FileSource(p), AudioSource)
    t = tmp_path / "t.json"
    t.write_text(json.dumps({"segments": []}))
    assert isinstance(TranscriptSource(t), UtteranceSource)


# ------------------------------------------------------------------ input limits


def test_1hz_header_is_refused_fast_with_the_rate(tmp_path):
    p = tmp_path / "one_hz.wav"
    with wave.open(str(p), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(1)
        w.writeframes(b"\x01\x00" * 8000)  # 16 KB claiming 8000 s
    t0 = time.perf_counter()
    with pytest.raises(AudioError) as ei:
        FileSource(p).open()
    assert time.perf_counter() - t0 < 1.0
    msg = str(ei.value)
    assert "claims a 1 Hz sample rate" in msg and "at least 4000 Hz" in msg and "\n" not in msg
    with pytest.raises(AudioError, match="1 Hz"):
        load_call(p)


def _assert_audio_error(path, phrase: str, empty_ok: bool = False) -> str:
    with pytest.raises(AudioError) as ei:
        FileSource(path).open()
    msg = str(ei.value)
    assert phrase in msg and str(path) in msg and "\n" not in msg
    if not empty_ok:
        assert "empty" not in msg
    return msg


def test_fifo_is_named_as_a_fifo(tmp_path):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    p = tmp_path / "pipe.wav"
    os.mkfifo(p)
    _assert_audio_error(p, "named pipe (FIFO)")  # and returns at once: opening a FIFO would block


def test_dev_zero_is_named_as_a_device():
    if not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero")
    msg = _assert_audio_error(Path("/dev/zero"), "/dev/zero is a character device, not an audio file")
    assert "empty" not in msg


def test_directory(tmp_path):
    _assert_audio_error(tmp_path, "is a directory")


def test_missing_file(tmp_path):
    _assert_audio_error(tmp_path / "nope.wav", "does not exist")


def test_three_channels(tmp_path):
    p = write_wav(tmp_path / "three.wav", [noise(8000, 0.5, i) for i in range(3)], 8000)
    _assert_audio_error(p, "3 channels")


def test_text_file_named_wav(tmp_path):
    p = tmp_path / "notes.wav"
    p.write_text("not audio, only words\n" * 50)
    _assert_audio_error(p, "not a readable audio file")


def test_zero_frame_wav(tmp_path):
    p = write_wav(tmp_path / "none.wav", [np.zeros(0, np.int16)], 8000)
    _assert_audio_error(p, "no audio frames")


def test_zero_byte_file_is_empty(tmp_path):
    p = tmp_path / "zero.wav"
    p.write_bytes(b"")
    _assert_audio_error(p, "empty file", empty_ok=True)


def test_unreadable_file_says_permission(tmp_path):
    p = write_wav(tmp_path / "locked.wav", [noise(8000, 0.5, 1)], 8000)
    p.chmod(0)
    out = as_unprivileged(
        "from coach.audio import probe\nfrom coach.errors import AudioError\n"
        f"try:\n    probe({str(p)!r})\n"
        "except AudioError as e:\n    print(e)\n")
    assert "permission denied" in out and "\n" not in out.strip()


def test_too_long_and_too_big(tmp_path):
    p = write_wav(tmp_path / "long.wav", [noise(8000, 3.0, 1)], 8000)
    with pytest.raises(AudioError, match="lasts 3.0 s, longer than the 2.0 s"):
        probe(p, AudioLimits(max_duration_s=2.0))
    with pytest.raises(AudioError, match="more than the 1.0 KiB"):
        probe(p, AudioLimits(max_bytes=1024))
    info = probe(p)
    assert (info.sample_rate, info.channels, info.frames) == (8000, 1, 24000)
    assert info.duration == pytest.approx(3.0) and info.warnings == ()


def test_truncated_file_streams_with_warning(tmp_path):
    p = write_wav(tmp_path / "full.wav", [noise(16000, 2.0, 1)], 16000)
    t = tmp_path / "trunc.wav"
    t.write_bytes(p.read_bytes()[: 44 + 16000 * 2])
    src = FileSource(t)
    got = streamed(src)
    assert len(got[Speaker.CUSTOMER]) == 16000 and src.duration == pytest.approx(1.0)
    assert len(src.warnings) == 1 and "truncated" in src.warnings[0]


def test_mono_file_has_no_right_channel(tmp_path):
    p = write_wav(tmp_path / "m.wav", [noise(8000, 0.5, 1)], 8000)
    with pytest.raises(AudioError, match="no right channel"):
        FileSource(p, agent_channel="right").open()


# ------------------------------------------------------------------ flat memory


def test_streaming_memory_is_flat(tmp_path):
    """10 minutes of stereo 8 kHz: a whole-file load would hold 100+ MB; streaming a few."""
    p = tmp_path / "long.wav"
    rate, seconds = 8000, 600
    with sf.SoundFile(str(p), "w", samplerate=rate, channels=2, subtype="PCM_16") as f:
        for k in range(seconds // 10):
            f.write(np.stack([noise(rate, 10, 2 * k), noise(rate, 10, 2 * k + 1)], axis=1))
    src = FileSource(p)
    tracemalloc.start()
    try:
        frames = 0
        for tup in src.chunks():
            frames += len(tup[0].samples)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert frames == seconds * 16000
    assert peak < 20 * 2 ** 20, f"peak traced memory {peak / 2 ** 20:.1f} MB"


# ------------------------------------------------------------------ transcripts and open_source


def _transcript(path: Path) -> Path:
    segs = [
        {"speaker": "customer", "start": 4.0, "end": 6.5, "text": "this is the third time I call"},
        {"speaker": "agent", "start": 0.0, "end": 2.0, "text": "thank you for calling"},
        {"speaker": "customer", "start": 2.5, "end": 6.5, "text": "earlier start same end"},
        {"speaker": "agent", "start": 6.8, "end": 9.0, "text": "I am sorry to hear that"},
    ]
    path.write_text(json.dumps({"segments": segs}))
    return path


def test_transcript_source_yields_utterances_sorted_by_end(tmp_path):
    src = TranscriptSource(_transcript(tmp_path / "call.json"))
    utts = list(src.utterances())
    assert [(u.end, u.start) for u in utts] == sorted((u.end, u.start) for u in utts)
    assert utts[1].text == "earlier start same end"
    assert src.kind == "utterances" and not src.live
    assert src.duration == 9.0 and src.speakers == (Speaker.AGENT, Speaker.CUSTOMER)
    assert "transcript, 4 utterances" in src.description


def test_open_source_picks_by_suffix(tmp_path):
    t = _transcript(tmp_path / "call.json")
    w = write_wav(tmp_path / "call.wav", [noise(8000, 1.0, 1), noise(8000, 1.0, 2)], 8000)
    c = write_wav(tmp_path / "cust.wav", [noise(8000, 1.0, 3)], 8000)
    with open_source(t) as s:
        assert isinstance(s, TranscriptSource)
    with open_source(w, sample_rate=8000) as s:
        assert isinstance(s, FileSource) and s.sample_rate == 8000 and s.kind == "audio"
        assert s.speakers == (Speaker.AGENT, Speaker.CUSTOMER)
    with open_source(w, c) as s:
        assert isinstance(s, TwoFileSource)
    with pytest.raises(TranscriptError, match="already holds both speakers"):
        open_source(t, c)
    with pytest.raises(AudioError, match="is a transcript, not audio"):
        open_source(w, t)
    with pytest.raises(AudioError, match="does not exist"):
        open_source(tmp_path / "missing.wav")


def test_open_call_blocks_are_equal_length(tmp_path):
    a = write_wav(tmp_path / "a.wav", [noise(48000, 1.5, 1)], 48000)
    c = write_wav(tmp_path / "c.wav", [noise(8000, 5.0, 2)], 8000)
    with open_call(a, c) as call:
        sizes = [tuple(len(x) for x in blk) for blk in call.blocks(block_s=0.5)]
    assert all(len(set(s)) == 1 for s in sizes) and sum(s[0] for s in sizes) == call.frames == 80000
