"""The `coach` command as a user runs it: one-line errors for bad input, events on disk."""
from __future__ import annotations

import json
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np

from conftest import REPO

COACH = [sys.executable, "-m", "coach.cli"]


def coach(*args: str, cwd: Path = REPO, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([*COACH, *args], cwd=cwd, capture_output=True, text=True, timeout=600, env=env)


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("coach: error:")]
    assert len(errors) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for n in needles:
        assert n in errors[0], errors[0]


def write_wav(path: Path, data: np.ndarray, rate: int = 16000) -> Path:
    data = np.atleast_2d(data.T).T if data.ndim == 1 else data
    with wave.open(str(path), "wb") as w:
        w.setnchannels(data.shape[1] if data.ndim == 2 else 1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(data.astype(np.int16).tobytes())
    return path


def test_missing_file(tmp_path):
    assert_one_line_error(coach("replay", str(tmp_path / "nope.wav")), "nope.wav")


def test_not_audio(tmp_path):
    p = tmp_path / "notes.wav"
    p.write_text("this is a text file, not audio\n" * 20)
    assert_one_line_error(coach("replay", str(p)), "notes.wav")


def test_empty_wav(tmp_path):
    p = write_wav(tmp_path / "empty.wav", np.zeros((0, 2), np.int16))
    assert_one_line_error(coach("replay", str(p)), "empty.wav")


def test_truncated_wav(tmp_path):
    full = write_wav(tmp_path / "full.wav", (np.random.default_rng(0).normal(0, 3000, (16000 * 2, 2))))
    p = tmp_path / "cut.wav"
    p.write_bytes(full.read_bytes()[:30])  # header cut in the middle
    assert_one_line_error(coach("replay", str(p)), "cut.wav")


def test_channel_that_does_not_exist(tmp_path):
    p = write_wav(tmp_path / "mono.wav", np.zeros(16000, np.int16))
    assert_one_line_error(coach("replay", str(p), "--agent-channel", "right"), "mono.wav")


def test_broken_playbook(tmp_path):
    pb = tmp_path / "playbook.yaml"
    pb.write_text("prompts:\n  - id: x\n    text: [oops\n")
    t = tmp_path / "t.json"
    t.write_text(json.dumps({"segments": [{"speaker": "agent", "start": 0, "end": 1, "text": "hi"}]}))
    assert_one_line_error(coach("replay", str(t), "--playbook", str(pb)), "playbook.yaml", "line")


def test_malformed_transcript(tmp_path):
    t = tmp_path / "t.json"
    t.write_text('{"segments": [{"speaker": "agent", "start": 0}]}')
    assert_one_line_error(coach("replay", str(t)), "t.json", "segment 1")


def test_incomplete_vosk_model(tmp_path):
    m = tmp_path / "vosk-model-broken"
    (m / "conf").mkdir(parents=True)
    (m / "conf" / "model.conf").write_text("--min-active=200\n")
    call = write_wav(tmp_path / "call.wav", np.zeros((16000, 2), np.int16))
    proc = coach("replay", str(call), "--vosk-model", str(m))
    assert_one_line_error(proc, "vosk-model-broken")
    assert proc.stdout == ""


def test_check_config_ok_and_list():
    proc = coach("check-config")
    assert proc.returncode == 0 and "OK" in proc.stdout
    proc = coach("check-config", "--list")
    assert "utterance_at_least" in proc.stdout


def test_transcript_replay_writes_events(tmp_path):
    t = tmp_path / "t.json"
    t.write_text(json.dumps({"segments": [
        {"speaker": "agent", "start": 0.0, "end": 2.0, "text": "thank you for calling, how can I help?"},
        {"speaker": "customer", "start": 2.5, "end": 5.0, "text": "I'd like to check when my parcel arrives."},
    ]}))
    out = tmp_path / "ev.jsonl"
    proc = coach("replay", str(t), "--events", str(out))
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(x) for x in out.read_text().splitlines()]
    assert all({"type", "t", "speaker"} <= set(e) for e in events)
    utts = [e for e in events if e["type"] == "utterance"]
    assert [u["speaker"] for u in utts] == ["agent", "customer"]
    assert "level" in utts[1] and "level" not in utts[0]
    assert "CUSTOMER" in proc.stdout and "parcel" in proc.stdout


def test_demo_replays_bundled_call_offline(tmp_path):
    """What `make demo` runs: the escalating sample, PocketSphinx, timeline + events."""
    out = tmp_path / "demo.jsonl"
    proc = coach("demo", "--events", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "PocketSphinx" in proc.stderr and "models download" in proc.stderr  # says which engine ran
    assert ">> OPEN  apologize" in proc.stdout
    events = [json.loads(x) for x in out.read_text().splitlines()]
    types = {e["type"] for e in events}
    assert {"utterance", "trajectory", "prompt_open", "prompt_close", "call_end"} <= types
    assert {e["speaker"] for e in events if e["type"] == "utterance"} == {"agent", "customer"}
    assert all(e["prompt"] for e in events if e["type"].startswith("prompt_"))
