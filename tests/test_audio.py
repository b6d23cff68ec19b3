"""coach.audio: loading, channel mapping, resampling and every bad-input error."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from coach.audio import CallAudio, chunk_audio, load_call, to_int16, write_wav
from coach.errors import AudioError


def tone(freq: float, rate: int, seconds: float, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return amp * np.sin(2 * np.pi * freq * t)


def peak_hz(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x.astype(np.float64) * np.hanning(len(x))))
    return float(np.argmax(spec) * rate / len(x))


@pytest.mark.parametrize("rate", [8000, 11025, 22050, 44100, 48000])
def test_resampling_keeps_frequency_and_duration(tmp_path, rate):
    wav = write_wav(tmp_path / f"t{rate}.wav", [tone(440.0, rate, 2.0)], rate)
    call = load_call(wav)
    assert isinstance(call, CallAudio)
    assert call.sample_rate == 16000 and call.source_rate == rate
    assert call.agent is None and call.customer is not None
    assert call.customer.dtype == np.int16
    assert abs(call.duration - 2.0) < 1e-3
    assert abs(peak_hz(call.customer, 16000) - 440.0) < 2.0
    # amplitude survives (no gain change, no clipping)
    assert 0.45 < np.abs(call.customer).max() / 32768 < 0.55


def test_to_int16_clips():
    y = to_int16(np.array([-2.0, -1.0, 0.0, 0.5, 1.0, 3.0]))
    assert y.tolist() == [-32768, -32768, 0, 16384, 32767, 32767]


def test_int16_roundtrip_is_exact(tmp_path):
    x = (np.random.default_rng(0).standard_normal(16000) * 3000).astype(np.int16)
    call = load_call(write_wav(tmp_path / "x.wav", [x], 16000), mono_speaker="agent")
    assert call.customer is None
    assert np.array_equal(call.agent, x)


@pytest.mark.parametrize("agent_channel, agent_hz", [("left", 300.0), ("right", 1000.0), (0, 300.0), (1, 1000.0)])
def test_stereo_channel_map(tmp_path, agent_channel, agent_hz):
    wav = write_wav(tmp_path / "st.wav", [tone(300, 16000, 1.0), tone(1000, 16000, 1.0)], 16000)
    call = load_call(wav, agent_channel=agent_channel)
    other = 1000.0 if agent_hz == 300.0 else 300.0
    assert abs(peak_hz(call.agent, 16000) - agent_hz) < 2
    assert abs(peak_hz(call.customer, 16000) - other) < 2


def test_two_files_different_lengths_and_rates(tmp_path):
    a = write_wav(tmp_path / "agent.wav", [tone(500, 8000, 1.0)], 8000)
    # customer: stereo 44.1 kHz, longer; must be downmixed
    c = write_wav(tmp_path / "cust.wav", [tone(700, 44100, 2.5), tone(700, 44100, 2.5)], 44100)
    call = load_call(a, c)
    assert len(call.agent) == len(call.customer) == int(2.5 * 16000)
    assert abs(call.duration - 2.5) < 1e-3
    assert abs(peak_hz(call.agent[:16000], 16000) - 500) < 2
    assert abs(peak_hz(call.customer, 16000) - 700) < 2
    assert not np.any(call.agent[int(1.1 * 16000):])  # padded with silence


def test_flac_and_8k_target(tmp_path):
    p = tmp_path / "x.flac"
    sf.write(p, tone(440, 48000, 1.0), 48000)
    call = load_call(p, sample_rate=8000)
    assert call.sample_rate == 8000 and len(call.customer) == 8000
    assert abs(peak_hz(call.customer, 8000) - 440) < 2


def test_silence_is_fine(tmp_path):
    call = load_call(write_wav(tmp_path / "s.wav", [np.zeros(8000, np.int16)], 8000))
    assert call.duration == pytest.approx(1.0)
    assert not np.any(call.customer)


def test_missing_file(tmp_path):
    with pytest.raises(AudioError, match="does not exist") as ei:
        load_call(tmp_path / "nope.wav")
    assert "nope.wav" in str(ei.value) and "\n" not in str(ei.value)


def test_directory(tmp_path):
    with pytest.raises(AudioError, match="is a directory"):
        load_call(tmp_path)


def test_text_file_renamed_wav(tmp_path):
    p = tmp_path / "notes.wav"
    p.write_text("this is not audio at all, just some words\n" * 20)
    with pytest.raises(AudioError, match="not a readable audio file") as ei:
        load_call(p)
    assert "notes.wav" in str(ei.value)


def test_empty_wav(tmp_path):
    p = write_wav(tmp_path / "empty.wav", [np.zeros(0, np.int16)], 16000)
    with pytest.raises(AudioError, match="no audio frames"):
        load_call(p)


def test_zero_byte_file(tmp_path):
    p = tmp_path / "zero.wav"
    p.write_bytes(b"")
    with pytest.raises(AudioError, match="empty file"):
        load_call(p)


def test_truncated_wav_loads_what_is_there_with_warning(tmp_path):
    p = write_wav(tmp_path / "full.wav", [tone(440, 16000, 2.0)], 16000)
    data = p.read_bytes()
    t = tmp_path / "trunc.wav"
    t.write_bytes(data[: 44 + 16000 * 2])  # header + 1 s of the 2 s promised
    call = load_call(t)
    assert call.duration == pytest.approx(1.0, abs=0.01)
    assert len(call.warnings) == 1 and "truncated" in call.warnings[0] and "trunc.wav" in call.warnings[0]
    assert load_call(p).warnings == ()


def test_truncated_header_is_an_error(tmp_path):
    p = write_wav(tmp_path / "full.wav", [tone(440, 16000, 1.0)], 16000)
    t = tmp_path / "hdr.wav"
    t.write_bytes(p.read_bytes()[:30])
    with pytest.raises(AudioError, match="hdr.wav"):
        load_call(t)


def test_nonexistent_channel(tmp_path):
    p = write_wav(tmp_path / "mono.wav", [tone(440, 16000, 0.5)], 16000)
    with pytest.raises(AudioError, match="no right channel"):
        load_call(p, agent_channel="right")
    with pytest.raises(AudioError, match="not a channel"):
        load_call(p, agent_channel="middle")


def test_more_than_two_channels_refused(tmp_path):
    p = write_wav(tmp_path / "quad.wav", [tone(440, 16000, 0.5)] * 3, 16000)
    with pytest.raises(AudioError, match="two files"):
        load_call(p)


def test_chunk_audio():
    x = np.arange(16500, dtype=np.int16)
    chunks = chunk_audio(x, 16000, 0.1)
    assert isinstance(chunks, list) and len(chunks) == 11
    assert all(len(c) == 1600 for c in chunks[:-1]) and len(chunks[-1]) == 500
    assert np.array_equal(np.concatenate(chunks), x)
