"""The bus and its sinks: no consumer can stall or kill the coach or the other sinks."""
from __future__ import annotations

import io
import os
import subprocess
import sys
import time

import pytest

from coach import codec
from coach.bus import Bus
from coach.errors import CoachError
from coach.events import CallEnd, Prompt, ScoredUtterance, Scores, Speaker, Utterance
from coach.sinks import JsonlSink, Progress, Timeline, check_events_path, safe_text


class Recorder:
    name = "recorder"

    def __init__(self, delay=0.0):
        self.events, self.delay, self.closed = [], delay, False

    def handle(self, ev, wall):
        time.sleep(self.delay)
        self.events.append((ev, wall))

    def close(self):
        self.closed = True


class Broken:
    name = "broken"

    def __init__(self, after=0):
        self.after, self.n = after, 0

    def handle(self, ev, wall):
        self.n += 1
        if self.n > self.after:
            raise BrokenPipeError(32, "Broken pipe")

    def close(self):
        pass


def utt(t, text="hello", speaker=Speaker.CUSTOMER):
    scores = Scores({"calm": 0.9, "frustrated": 0.05, "angry": 0.03, "abusive": 0.01, "threatening": 0.01},
                    {"negative": 0.1, "neutral": 0.8, "positive": 0.1})
    return ScoredUtterance(Utterance(speaker, t - 1.0, t, text), scores if speaker is Speaker.CUSTOMER else None)


def test_a_broken_sink_does_not_stop_the_others():
    good, bad = Recorder(), Broken(after=1)
    bus = Bus()
    bus.add(bad)
    bus.add(good)
    bus.start()
    for i in range(50):
        bus.publish(utt(i + 1.0))
    bus.publish(CallEnd(51.0))
    reports = {r.name: r for r in bus.close()}
    assert len(good.events) == 51 and good.closed
    assert reports["broken"].error and "Broken pipe" in reports["broken"].error
    assert reports["broken"].handled == 1 and reports["broken"].lost == 50
    assert reports["recorder"].ok


def test_a_slow_sink_drops_and_counts_instead_of_blocking_the_publisher():
    slow = Recorder(delay=0.05)
    bus = Bus()
    bus.add(slow, maxsize=4)
    bus.start()
    t0 = time.monotonic()
    for i in range(200):
        bus.publish(utt(i + 1.0))
    publish_s = time.monotonic() - t0
    rep = bus.close(timeout=2.0)[0]
    assert publish_s < 0.5  # 200 publishes never waited on a 50 ms-per-event sink
    assert rep.dropped > 150 and rep.handled + rep.dropped + rep.lost == 200


def test_wall_is_stamped_at_publish_and_increases():
    rec = Recorder()
    bus = Bus()
    bus.add(rec)
    bus.start()
    bus.publish(utt(1.0))
    time.sleep(0.1)
    bus.publish(utt(2.0))
    bus.close()
    (_, w1), (_, w2) = rec.events
    assert 0 <= w1 < w2 and w2 - w1 >= 0.09


def test_events_file_refuses_to_overwrite_inputs_and_existing_files(tmp_path):
    wav = tmp_path / "c.wav"
    wav.write_bytes(b"RIFF....")
    with pytest.raises(CoachError, match="inputs"):
        check_events_path(wav, [wav], force=True)  # even with --force, an input is never replaced
    with pytest.raises(CoachError, match="already exists"):
        check_events_path(wav, [])
    assert check_events_path(wav, [], force=True) == wav
    assert wav.read_bytes() == b"RIFF...."  # checking touched nothing


def test_two_writers_to_one_events_file_are_refused(tmp_path):
    out = tmp_path / "e.jsonl"
    first = JsonlSink(out, {"call": "a"})
    with pytest.raises(CoachError, match="already exists"):
        JsonlSink(out, {"call": "b"})
    with pytest.raises(CoachError, match="another coach is writing"):
        JsonlSink(out, {"call": "b"}, force=True)
    first.handle(utt(1.0), 0.1)
    first.close()
    assert codec.read_events(out).header["call"] == "a"


def test_events_file_keeps_only_whole_lines_when_the_disk_fills(tmp_path):
    """RLIMIT_FSIZE stands in for a full disk: writes past it fail with EFBIG."""
    out = tmp_path / "e.jsonl"
    code = f"""
import resource, sys
sys.path.insert(0, {str(os.getcwd())!r})
from coach.bus import Bus
from coach.events import CallEnd
from coach.sinks import JsonlSink
resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))
bus = Bus(); bus.add(JsonlSink({str(out)!r}, {{"call": "x"}})); bus.start()
for i in range(200):
    bus.publish(CallEnd(float(i)))
rep = bus.close()[0]
print(rep.handled, rep.error)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    handled, _, error = proc.stdout.strip().partition(" ")
    assert "space left" in error.lower() or "too large" in error.lower()
    data = out.read_bytes()
    assert data.endswith(b"\n") and len(data) <= 2000
    lines = data.decode().splitlines()
    assert len(lines) == int(handled) + 1  # header + every handled event, no half line
    codec.read_events(out)  # strict reader accepts it


def test_timeline_filters_control_characters_and_wraps_without_breaking_columns():
    out = io.StringIO()
    tl = Timeline(out, width=60)
    evil = "refund now \x1b[2J\x1b[31m" + "word " * 30
    tl.handle(utt(3.0, evil), 0.0)
    text = out.getvalue()
    assert "\x1b" not in text
    lines = text.splitlines()[1:]
    assert len(lines) > 2 and all(len(ln) <= 60 for ln in lines)
    assert all(ln.startswith(" " * 32) for ln in lines[1:])  # continuation lines stay under the text column
    assert safe_text("a\x07b\x9bc\td") == "a\ufffdb\ufffdc\td"


def test_timeline_time_column_never_runs_backwards():
    out = io.StringIO()
    tl = Timeline(out, width=120)
    # a long customer turn that ended after a short agent turn that started later
    tl.handle(utt(10.0, "long complaint"), 0.0)
    tl.handle(Prompt("apologize", 10.0, True, "Apologize"), 0.0)
    tl.handle(utt(11.0, "sorry", Speaker.AGENT), 0.0)
    times = [ln.split()[0] for ln in out.getvalue().splitlines()[1:]]
    assert times == sorted(times)


def test_progress_bar_reports_call_time_against_the_duration():
    out = io.StringIO()
    bar = Progress(out, 245.0, min_interval_s=0.0)
    bar.handle(utt(61.25), 2.0)
    bar.handle(CallEnd(122.5), 4.0)
    bar.close()
    text = out.getvalue()
    assert "01:01.2 / 04:05.0" in text and "02:02.5 / 04:05.0" in text and "30.6x real time" in text
    assert text.endswith("\n") and "#" * 15 in text
