"""The `coach` command as a user runs it: one-line errors for bad input, events on disk."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from coach.codec import dumps, read_events
from coach.events import CallEnd, Prompt, ScoredUtterance

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
    assert "warning" not in proc.stderr  # the shipped playbook fits the shipped model
    proc = coach("check-config", "--list")
    assert "utterance_at_least" in proc.stdout


_RUN = """
import atexit, concurrent.futures, sys, threading, time
from pathlib import Path
import coach.cli
out = Path(sys.argv[1])


class Finalised:
    def __del__(self):  # runs only if the interpreter tears down its objects
        (out / "teardown").write_text("ran")


kept = Finalised()
atexit.register(lambda: (out / "atexit").write_text("ran"))
pool = concurrent.futures.ThreadPoolExecutor(1)   # left open, as libraries do
pool.submit(time.sleep, 0.1)
real_main = coach.cli.main


def main(argv):
    code = real_main(argv)
    def late():                                   # still working when main has returned
        time.sleep(1.0)
        (out / "thread").write_text("done")
    threading.Thread(target=late).start()
    sys.stdout.write("tail without a newline")    # left in the buffer: only a flush writes it
    return code


coach.cli.main = main
coach.cli.run(sys.argv[2:])
"""


def _run_coach(tmp_path: Path, *args: str, stdout=subprocess.PIPE) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # buffered, as in a terminal pipe
    return subprocess.run([sys.executable, "-c", _RUN, str(tmp_path), *args], cwd=REPO, stdout=stdout,
                          stderr=subprocess.PIPE, text=True, timeout=300, env=env)


@pytest.mark.parametrize("args, code", [(["check-config"], 0), (["check-config", "/nonexistent.yaml"], 2)],
                         ids=["ok", "error"])
def test_the_coach_command_skips_only_the_interpreters_teardown(tmp_path, args, code):
    """`coach` (cli.run) ends with os._exit to save the slow torch teardown: the exit
    status is main's; threads, idle executor pools, exit handlers and buffered output
    all finish; only the freeing of objects is skipped."""
    proc = _run_coach(tmp_path, *args)
    assert proc.returncode == code, proc.stderr
    assert proc.stdout.endswith("tail without a newline")
    assert ("OK, " in proc.stdout) == (code == 0) and ("coach: error:" in proc.stderr) == (code == 2)
    assert (tmp_path / "thread").read_text() == "done"
    assert (tmp_path / "atexit").read_text() == "ran"
    assert not (tmp_path / "teardown").exists()
    assert "Traceback" not in proc.stderr


def test_the_coach_command_says_so_when_its_output_cannot_be_written(tmp_path):
    """A full disk at the final flush is a one-line error and status 2, not a short
    output with status 0."""
    with open("/dev/full", "w") as full:
        proc = _run_coach(tmp_path, "check-config", stdout=full)
    assert proc.returncode == 2, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("coach: error:")]
    assert len(errors) == 1 and "could not write the output" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_check_config_warns_when_the_model_undoes_corroboration(tmp_path):
    """A model whose threat threshold reaches the playbook's sure_p lets one threat through alone."""
    from coach import resources
    model = tmp_path / "retrained"
    model.mkdir()
    cfg = json.loads((resources.packaged(resources.CLASSIFIER) / "config.json").read_text())
    cfg["thresholds"]["threatening"] = 0.7
    (model / "config.json").write_text(json.dumps(cfg))
    proc = coach("check-config", "--model", str(model))
    assert proc.returncode == 0 and "OK" in proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("coach: warning: prompt call_security"), proc.stderr
    assert "threshold 0.7" in lines[0] and "set sure_p above 0.7" in lines[0]
    (tmp_path / "nothing").mkdir()
    bad = coach("check-config", "--model", str(tmp_path / "nothing"))
    assert_one_line_error(bad, "config.json")
    assert bad.stdout == ""  # no "OK" for a check that could not be made
    assert_one_line_error(coach("check-config", "--model", str(tmp_path / "absent")), "absent", "does not exist")


def test_transcript_replay_writes_events(tmp_path):
    t = tmp_path / "t.json"
    t.write_text(json.dumps({"segments": [
        {"speaker": "agent", "start": 0.0, "end": 2.0, "text": "thank you for calling, how can I help?"},
        {"speaker": "customer", "start": 2.5, "end": 5.0, "text": "I'd like to check when my parcel arrives."},
    ]}))
    out = tmp_path / "ev.jsonl"
    proc = coach("replay", str(t), "--events", str(out))
    assert proc.returncode == 0, proc.stderr
    f = read_events(out)
    assert f.header["version"] == 1 and f.header["call"] == str(t)
    lines = out.read_text().splitlines()
    assert all({"type", "t", "wall"} <= set(json.loads(x)) for x in lines)
    utts = [e.utterance for e, _ in f.events if isinstance(e, ScoredUtterance)]
    assert [u.speaker.value for u in utts] == ["agent", "customer"]
    assert isinstance(f.events[-1][0], CallEnd) and "speaker" not in json.loads(lines[-1])
    assert "CUSTOMER" in proc.stdout and "parcel" in proc.stdout
    # the codec round-trips the file byte for byte
    assert [dumps(e, w) for e, w in f.events] == [x + "\n" for x in lines[1:]]


def _transcript(tmp_path, n=40, step=3.0, text="i want my refund now"):
    segs = [{"speaker": "customer" if i % 2 else "agent", "start": i * step, "end": i * step + 2.0,
             "text": text if i % 2 else "i understand, let me check"} for i in range(n)]
    t = tmp_path / "long.json"
    t.write_text(json.dumps({"segments": segs}))
    return t


def test_events_never_overwrite_an_input_or_an_existing_file(tmp_path):
    t = _transcript(tmp_path, n=4)
    before = t.read_bytes()
    assert_one_line_error(coach("replay", str(t), "--events", str(t)), "inputs")
    assert_one_line_error(coach("replay", str(t), "--events", str(t), "--force"), "inputs")
    assert t.read_bytes() == before
    wav = write_wav(tmp_path / "c.wav", np.zeros((16000, 2), np.int16))
    wav_bytes = wav.read_bytes()
    assert_one_line_error(coach("replay", str(wav), "--events", str(wav)), "inputs")
    assert wav.read_bytes() == wav_bytes
    old = tmp_path / "old.jsonl"
    old.write_text("precious\n")
    assert_one_line_error(coach("replay", str(t), "--events", str(old)), "already exists", "--force")
    assert old.read_text() == "precious\n"
    assert coach("replay", str(t), "--events", str(old), "--force").returncode == 0
    assert read_events(old).events


def test_a_broken_stdout_loses_no_events(tmp_path):
    t = _transcript(tmp_path)
    out = tmp_path / "ev.jsonl"
    cmd = f"{sys.executable} -m coach.cli replay {t} --events {out} | head -1"
    proc = subprocess.run(["bash", "-c", cmd], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert "Traceback" not in proc.stderr, proc.stderr
    f = read_events(out)
    assert sum(isinstance(e, ScoredUtterance) for e, _ in f.events) == 40
    assert isinstance(f.events[-1][0], CallEnd)


def test_a_terminal_that_cannot_encode_the_text_gets_replacements(tmp_path):
    t = _transcript(tmp_path, n=4, text="c'est déjà trop — 請")
    env = {**os.environ, "PYTHONIOENCODING": "ascii", "LC_ALL": "C"}
    proc = coach("replay", str(t), "--events", str(tmp_path / "e.jsonl"), env=env)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "c'est d?j? trop" in proc.stdout
    assert "déjà" in (tmp_path / "e.jsonl").read_text(encoding="utf-8")


def test_ansi_escapes_in_a_transcript_do_not_reach_the_terminal(tmp_path):
    t = _transcript(tmp_path, n=2, text="hello \u001b[2J\u001b]0;pwned\u0007 there")
    proc = coach("replay", str(t))
    assert proc.returncode == 0, proc.stderr
    assert "\x1b" not in proc.stdout and "\x07" not in proc.stdout and "there" in proc.stdout


@pytest.mark.parametrize("signals", [[signal.SIGINT], [signal.SIGTERM], [signal.SIGINT, signal.SIGINT]],
                         ids=["ctrl-c", "sigterm", "ctrl-c-twice"])
def test_stopping_a_paced_replay_is_quick_and_ends_the_events_file(tmp_path, signals):
    t = _transcript(tmp_path, n=100, text="you stupid idiot")  # 300 s of call, paced
    out = tmp_path / "ev.jsonl"
    proc = subprocess.Popen([*COACH, "replay", str(t), "--speed", "realtime", "--events", str(out)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait until the run is under way (models loaded)
        if out.exists() and out.read_text().count("\n") >= 3:
            break
        time.sleep(0.1)
    time.sleep(2.0)
    t_sig = time.monotonic()
    for sig in signals:
        proc.send_signal(sig)
        time.sleep(0.1)
    _, err = proc.communicate(timeout=30)
    took = time.monotonic() - t_sig
    assert took < 2.0, err
    # 130/143 from coach itself, even when the second Ctrl-C lands while it exits: the
    # handlers stay installed and the interpreter's teardown is skipped (cli.run).
    assert proc.returncode in (130, 143) and "Traceback" not in err
    f = read_events(out)
    end = f.events[-1][0]
    assert isinstance(end, CallEnd) and 1.0 < end.t < 30.0  # the time reached, not the transcript's 300 s
    opened = [e.prompt for e, _ in f.events if isinstance(e, Prompt) and e.opened]
    closed = [e.prompt for e, _ in f.events if isinstance(e, Prompt) and not e.opened]
    assert sorted(opened) == sorted(closed)


def test_ctrl_c_on_a_terminal_stops_an_audio_replay_cleanly(tmp_path):
    """A terminal's Ctrl-C reaches the whole process group, recognizer processes included."""
    from coach import resources
    out = tmp_path / "ev.jsonl"
    proc = subprocess.Popen([*COACH, "replay", str(resources.locate(resources.DEMO_CALL)), "--speed", "realtime",
                             "--engine", "pocketsphinx", "--events", str(out)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if out.exists() and out.read_text().count("\n") >= 2:
            break
        time.sleep(0.1)
    time.sleep(1.0)
    t_sig = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert time.monotonic() - t_sig < 2.0, err
    assert proc.returncode == 130 and "Traceback" not in err, err
    end = read_events(out).events[-1][0]
    assert isinstance(end, CallEnd) and end.t < 30.0
